"""Service settings from the environment (prefix ``ATTEND_``) and ``.env``, cached by
``get_settings()``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ATTEND_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".attend"), description="Where the SQLite file and index files live.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite at <data_dir>/attend.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db"
    )
    encoder: str = Field("all-MiniLM-L6-v2", description="Encoder name or checkpoint directory.")
    generator: str = Field("attend-qa", description="Generator name (folder under models/) or directory.")
    device: str = Field("auto", description="auto, cpu or cuda.")
    host: str = "127.0.0.1"
    port: int = 8000
    max_request_bytes: int = Field(32 * 1024 * 1024, description="Larger request bodies get 413.")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'attend.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
