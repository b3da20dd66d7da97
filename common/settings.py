"""Service settings from the environment (prefix ``ATTEND_``) and ``.env``, cached by
``get_settings()``."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def hash_key(key: str) -> str:
    """The sha256 hex digest of an API key: what the settings hold (``attend keys hash KEY``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeySpec(BaseModel):
    """One API key as configured: the sha256 hex digest of the key (``attend keys hash KEY``),
    its scope (read < write < admin) and the collections it may touch (``*`` for all)."""

    hash: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    scope: Literal["read", "write", "admin"] = "read"
    collections: list[str] = Field(default_factory=lambda: ["*"])
    name: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATTEND_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".attend"), description="Where the SQLite file and index files live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite at <data_dir>/attend.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db"
    )
    encoder: str = Field("all-MiniLM-L6-v2", description="Encoder name or checkpoint directory.")
    generator: str = Field(
        "attend-qa",
        description="Default generator: attend-qa (extractive, a folder under models/ or a directory) or a generative "
        "chat model (smollm2, a .gguf file, or a Llama-family directory).",
    )
    generative: str = Field(
        "smollm2", description="The chat model that `generator: generative` names (smollm2, a .gguf file or a directory)."
    )
    generator_quant: str = Field(
        "auto", pattern="^(auto|int8|none)$",
        description="Weights of the generative model's linear layers: auto (int8 on CPU), int8 or none (fp32).",
    )
    reranker: str | None = Field(
        None,
        description="The reranker a request or a collection may name besides those under models/ (a folder name "
        "there or a reranker directory; requests name it by this value or its folder name). Default: none.",
    )
    device: str = Field("auto", description="auto, cpu or cuda.")
    ray_address: str | None = Field(
        None,
        description="The Ray cluster that distributed ingestion and sharded collections use (ray://host:10001, "
        "host:6379, or auto for a running local one). Default: start a local cluster when first needed.",
    )
    shard_backend: str = Field(
        "auto", pattern="^(auto|local|ray)$",
        description="Where a sharded collection's shards live: ray (one actor each), local (this process), or auto "
        "(ray where it is installed). Results are the same.",
    )
    encoder_precision: str = Field(
        "auto", description="auto (bf16 where the hardware runs it natively, else fp32), fp32, bf16 or int8."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = Field(32 * 1024 * 1024, description="Larger request bodies get 413.")
    api_keys: list[ApiKeySpec] = Field(
        default_factory=list,
        description='JSON list of {"hash": sha256-hex, "scope": "read|write|admin", "collections": ["*"]}. '
        "Keys are required whenever any are configured or the server listens beyond loopback.",
    )
    background_threshold: int = Field(
        64, ge=0, description="Document batches larger than this run as a background job (202)."
    )
    ingest_batch_size: int = Field(64, ge=1, description="Documents per store transaction.")
    max_batch_documents: int = Field(100_000, ge=1, description="Most documents in one request.")
    torch_threads: int | None = Field(
        None, ge=1,
        description="Intra-op threads of each model call (torch.set_num_threads); default: torch's own "
        "(all cores). 1 lets concurrent requests run side by side instead of contending for every core.",
    )
    gil_switch_interval_ms: float = Field(
        1.0, gt=0, description="Python's thread switch interval under `attend serve` (sys.setswitchinterval)."
    )
    index_save_delay_s: float = Field(
        5.0, ge=0, description="Index files are saved this long after the last ingestion (debounced)."
    )
    ray_address: str | None = Field(
        None,
        description="The Ray cluster to join (needs attend[distributed]) for `?ray=true` ingestion jobs and "
        "`attend index --ray`: ray://head:10001, head:6379 or auto; default: RAY_ADDRESS, else a cluster started "
        "on this machine, else a new local one.",
    )
    ray_actors: int = Field(2, ge=1, description="Encoder actors of a `?ray=true` job (one GPU each when the cluster has GPUs).")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'attend.db').resolve()}"

    @property
    def auth_required(self) -> bool:
        """Keys are required when any are configured or the server listens beyond loopback."""
        return bool(self.api_keys) or self.host not in LOOPBACK_HOSTS


@lru_cache
def get_settings() -> Settings:
    return Settings()
