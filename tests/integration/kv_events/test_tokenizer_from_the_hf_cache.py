"""precise_prefix's tokenizer for a replica named by a Hugging Face hub id (`serve --backend vllm
--model org/name`): read from this machine's HF cache, where the replica downloaded it; never
fetched. Run in a child process so HF_HUB_CACHE is read fresh, as a gateway process would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROBE = """
import sys
from dpserve.gateway.kv_events.prompt_keys import load_tokenizer
from dpserve.model_store import ModelNotFoundError
try:
    tok = load_tokenizer(sys.argv[1])
except ModelNotFoundError as exc:
    print("ERROR", exc)
else:
    print("IDS", tok.encode("The capital of France is Paris."))
"""


def fake_hf_cache(root: Path, repo_id: str, model_dir: Path) -> None:
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/COMMIT/...}, and
    as a download by vLLM or `hf download` leaves it: the repo's whole file listing in
    trees/COMMIT.json, naming files nobody fetched (Llama 3's original/tokenizer.model)."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    copied = []
    for f in model_dir.iterdir():  # the tokenizer's files only: no weights in the cache
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".gguf")):
            shutil.copy(f, snapshot / f.name)
            copied.append(f.name)
    (repo / "trees").mkdir()
    listed = [*copied, "model.safetensors", "original/tokenizer.model", "original/params.json"]
    (repo / "trees" / f"{COMMIT}.json").write_text(json.dumps(
        {"format_version": 1, "files": {name: {"size": 1, "blob_id": "0" * 40} for name in listed}}))


def probe(name: str, cache: Path) -> str:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True, env=env,
                         timeout=150, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_a_hub_id_in_the_local_hf_cache_gives_the_replicas_tokenizer(tmp_path: Path,
                                                                      bundled_model_dir: Path) -> None:
    fake_hf_cache(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct", bundled_model_dir)
    from_dir = probe(str(bundled_model_dir), tmp_path)
    from_hub_id = probe("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)
    assert from_dir.startswith("IDS [") and from_hub_id == from_dir


def test_a_hub_id_not_in_the_cache_is_a_clear_error_not_a_download(tmp_path: Path) -> None:
    # HF_ENDPOINT points at a closed loopback port: a download attempt would fail differently
    line = probe("some-org/not-cached-model", tmp_path)
    assert line.startswith("ERROR") and "HF cache" in line and "never downloads" in line


def test_a_cached_tokenizer_config_without_its_vocabulary_is_refused(tmp_path: Path,
                                                                   bundled_model_dir: Path) -> None:
    """An interrupted download: tokenizer_config.json alone would load as a 3-token tokenizer that
    encodes every prompt to nothing (keys that match nothing, a 0 % hit rate, no error)."""
    fake_hf_cache(tmp_path, "org/half-downloaded", bundled_model_dir)
    snapshot = tmp_path / "models--org--half-downloaded" / "snapshots" / COMMIT
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (snapshot / name).unlink(missing_ok=True)
    line = probe("org/half-downloaded", tmp_path)
    assert line.startswith("ERROR") and "tokenizer.json" in line and str(tmp_path) in line
