"""A model directory's generation_config.json with a bundled model's recommended sampling merged in.

vLLM, SGLang and `dpserve engine` all read their default sampling from this file (vLLM's
`--generation-config auto`), so writing the model card's recommendation there makes every backend
serving the bundled model answer the way its authors meant.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GENERATION_CONFIG_FILE = "generation_config.json"


def merge_generation_defaults(model_dir: Path, defaults: Mapping[str, Any]) -> None:
    """Set `defaults` in model_dir/generation_config.json, keeping its other keys; the file is
    replaced atomically, so replicas reading it meanwhile see the old or the new one, never half."""
    path = model_dir / GENERATION_CONFIG_FILE
    config = json.loads(path.read_text()) if path.is_file() else {}
    config.update(defaults)
    write_atomically(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; other users' replicas read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
