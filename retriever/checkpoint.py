"""Reading and writing encoder checkpoints in the sentence-transformers / HF BERT directory format.

A directory holds ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``), ``tokenizer.json``
(or ``vocab.txt``) and, for sentence-transformers models, ``modules.json``, ``1_Pooling/config.json``,
``sentence_bert_config.json`` (``max_seq_length``) and a ``Normalize`` entry in ``modules.json`` when
the embeddings are L2-normalised. ``save_checkpoint`` writes the same layout with HF BERT weight names,
so sentence-transformers and ``transformers`` load what we save and we load what they save.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from common.errors import CheckpointError, InvalidInput
from retriever.encoder import BertConfig, BertEncoder
from retriever.pooling import PoolingConfig
from retriever.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

# HF BERT name (after the prefix) -> our parameter name; ``{i}`` is the layer index.
_HF_TO_OURS = {
    "embeddings.word_embeddings": "embeddings.word",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.token_type",
    "embeddings.LayerNorm": "embeddings.norm",
    "encoder.layer.{i}.attention.output.dense": "layers.{i}.attn.out",
    "encoder.layer.{i}.attention.output.LayerNorm": "layers.{i}.attn.norm",
    "encoder.layer.{i}.intermediate.dense": "layers.{i}.mlp_in",
    "encoder.layer.{i}.output.dense": "layers.{i}.mlp_out",
    "encoder.layer.{i}.output.LayerNorm": "layers.{i}.mlp_norm",
}
_QKV = ("query", "key", "value")
_ANCHOR_HF = "embeddings.word_embeddings.weight"
_ANCHOR_OURS = "embeddings.word.weight"


@dataclass
class Checkpoint:
    """Everything a directory says about a sentence encoder."""

    model: BertEncoder
    tokenizer: Tokenizer
    pooling: PoolingConfig
    max_length: int
    path: Path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _st_modules(root: Path) -> tuple[Path, Path | None, bool]:
    """From ``modules.json``: the transformer folder, the pooling folder and whether a Normalize
    module follows. Without ``modules.json`` the root is a plain BERT folder."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return root, None, False
    transformer, pooling, normalize = root, None, False
    for mod in _read_json(modules_file):
        kind = str(mod.get("type", "")).rsplit(".", 1)[-1]
        where = root / mod.get("path", "")
        if kind == "Transformer":
            transformer = where
        elif kind == "Pooling":
            pooling = where
        elif kind == "Normalize":
            normalize = True
        else:
            raise CheckpointError(f"{modules_file}: module type {mod.get('type')!r} is not supported")
    return transformer, pooling, normalize


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    st_file, bin_file = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(st_file))
    if bin_file.is_file():
        return torch.load(str(bin_file), map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder} has neither model.safetensors nor pytorch_model.bin")


def hf_to_ours(state: dict[str, torch.Tensor], cfg: BertConfig) -> dict[str, torch.Tensor]:
    """Map a HF BERT state dict (any key prefix such as ``bert.`` or ``0.auto_model.``) onto our
    parameter names, fusing query/key/value. Raises ``CheckpointError`` on missing weights."""
    if any(k.endswith(_ANCHOR_OURS) for k in state):
        prefix = next(k for k in state if k.endswith(_ANCHOR_OURS))[: -len(_ANCHOR_OURS)]
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    anchors = [k for k in state if k.endswith(_ANCHOR_HF)]
    if not anchors:
        raise CheckpointError(f"no {_ANCHOR_HF!r} (under any prefix) among {len(state)} weights: not a BERT checkpoint")
    prefix = min(anchors, key=len)[: -len(_ANCHOR_HF)]
    src = {}
    for k, v in state.items():
        if k.startswith(prefix):
            k = k[len(prefix) :]
            k = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", k))  # old LayerNorm names
            src[k] = v
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []

    def take(name: str) -> torch.Tensor | None:
        if name not in src:
            missing.append(prefix + name)
            return None
        used.add(name)
        return src[name]

    layers = [str(i) for i in range(cfg.num_hidden_layers)]
    for hf, ours in _HF_TO_OURS.items():
        for i in layers if "{i}" in hf else [""]:
            for suffix in ("weight", "bias"):
                if ours.endswith(("word", "position", "token_type")) and suffix == "bias":
                    continue
                t = take(f"{hf.format(i=i)}.{suffix}")
                if t is not None:
                    out[f"{ours.format(i=i)}.{suffix}"] = t
    for i in layers:
        for suffix in ("weight", "bias"):
            parts = [take(f"encoder.layer.{i}.attention.self.{n}.{suffix}") for n in _QKV]
            if all(p is not None for p in parts):
                out[f"layers.{i}.attn.qkv.{suffix}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise CheckpointError(f"checkpoint lacks {len(missing)} weights the config needs: {shown}")
    ignored = sorted(set(src) - used)
    if ignored:
        logger.debug("ignoring %d checkpoint weights we do not use: %s", len(ignored), ignored[:8])
    return out


def ours_to_hf(state: dict[str, torch.Tensor], cfg: BertConfig) -> dict[str, torch.Tensor]:
    """Our state dict under HF BERT names (query/key/value split again)."""
    out: dict[str, torch.Tensor] = {}
    for hf, ours in _HF_TO_OURS.items():
        for i in range(cfg.num_hidden_layers) if "{i}" in hf else [0]:
            for suffix in ("weight", "bias"):
                key = f"{ours.format(i=i)}.{suffix}"
                if key in state:
                    out[f"{hf.format(i=i)}.{suffix}"] = state[key]
    for i in range(cfg.num_hidden_layers):
        for suffix in ("weight", "bias"):
            for name, part in zip(_QKV, state[f"layers.{i}.attn.qkv.{suffix}"].chunk(3, dim=0), strict=True):
                out[f"encoder.layer.{i}.attention.self.{name}.{suffix}"] = part
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def load_state(model: BertEncoder, state: dict[str, torch.Tensor]) -> None:
    """Load our-named weights, with a ``CheckpointError`` naming missing keys or wrong shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(f"checkpoint lacks weights: {missing[:6]}")
    bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"checkpoint weights do not fit the config: {bad[:6]}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a sentence-transformers or plain BERT directory into our model, tokenizer and pooling."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory")
    folder, pooling_dir, normalize = _st_modules(root)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} has no config.json")
    try:
        cfg = BertConfig.from_dict(_read_json(folder / "config.json"))
    except (InvalidInput, TypeError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: {exc}") from exc
    model = BertEncoder(cfg)
    load_state(model, hf_to_ours(_read_weights(folder), cfg))
    model.eval()
    tokenizer = Tokenizer.from_dir(folder)
    if pooling_dir is not None and (pooling_dir / "config.json").is_file():
        try:
            pooling = PoolingConfig.load(pooling_dir / "config.json", normalize=normalize)
        except InvalidInput as exc:
            raise CheckpointError(f"{pooling_dir / 'config.json'}: {exc}") from exc
    else:
        pooling = PoolingConfig(mode="mean", normalize=normalize)
    max_length = cfg.max_position_embeddings
    sbert = folder / "sentence_bert_config.json"
    if sbert.is_file() and _read_json(sbert).get("max_seq_length"):
        max_length = min(int(_read_json(sbert)["max_seq_length"]), max_length)
    elif (folder / "tokenizer_config.json").is_file():
        max_length = min(int(_read_json(folder / "tokenizer_config.json").get("model_max_length", max_length)), max_length)
    logger.info("loaded encoder from %s (%d layers, dim %d, max_length %d)", root, cfg.num_hidden_layers, cfg.hidden_size, max_length)
    return Checkpoint(model=model, tokenizer=tokenizer, pooling=pooling, max_length=max_length, path=root)


def _tokenizer_config(tokenizer: Tokenizer, max_length: int) -> dict[str, Any]:
    names = {"cls_token": tokenizer.cls_id, "sep_token": tokenizer.sep_id, "pad_token": tokenizer.pad_id, "unk_token": tokenizer.unk_id}
    out: dict[str, Any] = {k: tokenizer.id_to_token(v) for k, v in names.items() if v is not None}
    if tokenizer.token_to_id("[MASK]") is not None:
        out["mask_token"] = "[MASK]"
    if out.get("cls_token") == "[CLS]":
        out["tokenizer_class"] = "BertTokenizer"
    if tokenizer.lowercase is not None:
        out["do_lower_case"] = tokenizer.lowercase
    out["model_max_length"] = max_length
    return out


def save_checkpoint(
    path: str | Path, model: BertEncoder, tokenizer: Tokenizer, pooling: PoolingConfig, max_length: int
) -> Path:
    """Write a sentence-transformers directory that ``load_checkpoint`` and sentence-transformers
    both load: config.json, model.safetensors (HF BERT names), tokenizer.json + tokenizer_config.json,
    modules.json, 1_Pooling/config.json, sentence_bert_config.json."""
    from safetensors.torch import save_file

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    state = model.state_dict()
    if any(not v.is_floating_point() for v in state.values()):
        raise CheckpointError("cannot save a quantised model; save the fp32/bf16 weights instead")
    (root / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    save_file(ours_to_hf(state, cfg), str(root / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save(root)
    (root / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(tokenizer, max_length), indent=2) + "\n")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (root / "2_Normalize").mkdir(exist_ok=True)
    (root / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (root / "1_Pooling").mkdir(exist_ok=True)
    (root / "1_Pooling" / "config.json").write_text(json.dumps(pooling.to_st_config(cfg.hidden_size), indent=2) + "\n")
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length, "do_lower_case": False}, indent=2) + "\n")
    logger.info("saved encoder to %s", root)
    return root
