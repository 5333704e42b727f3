"""What sampling a request runs with: its own values, else the model's recommended defaults, else the
API's — then vLLM's guards for temperatures too small to divide logits by.

The model's defaults come from its `generation_config.json`, read the way vLLM's
`--generation-config auto` reads it: `temperature`, `top_p`, `top_k` and `max_new_tokens` (which
caps every request's max_tokens); values equal to transformers' own defaults are no override
(vLLM reads the file's difference from them, so `top_k: 50` there is ignored as it is in vLLM).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpserve.config import ConfigError
from dpserve.protocol import SamplingFields
from dpserve.serving.engine_client import SamplingParams

logger = logging.getLogger(__name__)

# vLLM's _SAMPLING_EPS: a temperature below it means greedy (1/T would overflow float32 logits).
GREEDY_BELOW_TEMPERATURE = 1e-5
# vLLM's _MAX_TEMP: smaller positive temperatures are raised to it, still sampling but finite.
MIN_SAMPLING_TEMPERATURE = 1e-2
# transformers' GenerationConfig defaults: a file value equal to one of these overrides nothing.
_HF_DEFAULTS: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "top_k": 50}
# Keys vLLM reads that this engine does not implement: reported once, not applied.
_UNSUPPORTED_KEYS = ("repetition_penalty", "min_p")
GENERATION_CONFIG_FILE = "generation_config.json"


@dataclass(frozen=True)
class SamplingDefaults:
    """Defaults for requests that leave a field out; None = the API's default (vLLM's neutral one)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None  # from max_new_tokens: an upper bound on every request's max_tokens

    @classmethod
    def from_generation_config(cls, config: dict[str, Any], source: str) -> SamplingDefaults:
        """The overrides in a parsed generation_config.json; ConfigError naming `source` if invalid."""
        values = {k: config[k] for k in ("temperature", "top_p", "top_k", "max_new_tokens")
                  if config.get(k) is not None and config.get(k) != _HF_DEFAULTS.get(k)}
        ignored = [k for k in _UNSUPPORTED_KEYS if config.get(k) not in (None, 1.0, 0.0)]
        if ignored:
            logger.warning("%s sets %s, which this engine does not implement; ignored", source, ignored)
        defaults = cls(temperature=values.get("temperature"), top_p=values.get("top_p"),
                       top_k=values.get("top_k"), max_tokens=values.get("max_new_tokens"))
        defaults.check(source)
        return defaults

    def check(self, source: str) -> None:
        def bad(key: str, value: Any, rule: str) -> ConfigError:
            return ConfigError(f"{source}: {key} must be {rule}, got {value!r}")

        t, p, k, n = self.temperature, self.top_p, self.top_k, self.max_tokens
        if t is not None and not (isinstance(t, int | float) and math.isfinite(t) and t >= 0):
            raise bad("temperature", t, "a finite number >= 0")
        if p is not None and not (isinstance(p, int | float) and 0 < p <= 1):
            raise bad("top_p", p, "in (0, 1]")
        if k is not None and not (isinstance(k, int) and (k == -1 or k >= 1)):
            raise bad("top_k", k, "-1 or an integer >= 1")
        if n is not None and not (isinstance(n, int) and n >= 1):
            raise bad("max_new_tokens", n, "an integer >= 1")

    def overrides(self) -> dict[str, Any]:
        """The fields that differ from the API defaults (for the start-up log line)."""
        return {k: v for k, v in vars(self).items() if v is not None}


def load_sampling_defaults(source: str, model_dir: Path) -> SamplingDefaults:
    """`--generation-config`: "auto" = the model directory's file, "vllm" = none, else a directory
    (or file) path. A missing file in "auto" mode means no overrides; elsewhere it is an error."""
    if source == "vllm":
        return SamplingDefaults()
    path = model_dir / GENERATION_CONFIG_FILE if source == "auto" else Path(source).expanduser()
    if path.is_dir():
        path = path / GENERATION_CONFIG_FILE
    if not path.is_file():
        if source == "auto":
            return SamplingDefaults()
        raise ConfigError(f"--generation-config {source}: no {GENERATION_CONFIG_FILE} at {path}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    defaults = SamplingDefaults.from_generation_config(config, str(path))
    if defaults.overrides():
        logger.info("default sampling parameters come from %s: %s (requests may override each; "
                    "--generation-config vllm turns this off)", path, defaults.overrides())
    return defaults


def sampling_params(fields: SamplingFields, defaults: SamplingDefaults, max_tokens: int) -> SamplingParams:
    """Request > model defaults > API defaults, made numerically safe for the sampler."""
    temperature = _first(fields.temperature, defaults.temperature, 1.0)
    top_p = _first(fields.top_p, defaults.top_p, 1.0)
    top_k = _first(fields.top_k, defaults.top_k, -1)
    if temperature < GREEDY_BELOW_TEMPERATURE:
        temperature, top_p, top_k = 0.0, 1.0, -1  # greedy: truncation would change nothing
    elif temperature < MIN_SAMPLING_TEMPERATURE:
        logger.debug("temperature %g raised to %g (smaller ones overflow the logits)", temperature,
                     MIN_SAMPLING_TEMPERATURE)
        temperature = MIN_SAMPLING_TEMPERATURE
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                          top_k=None if top_k == -1 else top_k, seed=fields.seed,
                          stop_token_ids=fields.stop_token_ids, ignore_eos=fields.ignore_eos)


def capped_max_tokens(max_tokens: int, defaults: SamplingDefaults) -> int:
    """vLLM's rule: the generation config's max_new_tokens bounds whatever the request asked."""
    return max_tokens if defaults.max_tokens is None else min(max_tokens, defaults.max_tokens)


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)
