"""Model resolution: bundled names, local dirs, clear errors, atomic + locked conversion."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import pytest

from dpserve.model_store import ModelNotFoundError, resolve_model
from dpserve.model_store.resolver import COMPLETE_MARKER, LAYOUT_VERSION


def _fake_converter(gguf: Path, out: Path) -> None:
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"x")


def test_local_hf_dir_is_accepted(tmp_path: Path) -> None:
    _fake_converter(tmp_path, tmp_path)
    assert resolve_model(str(tmp_path)).path == tmp_path.resolve()


def test_unknown_name_says_what_is_available() -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("no-such-model")
    assert "smollm2-135m" in str(err.value) and "config.json" in str(err.value)


def test_dir_without_weights_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"safetensors"):
        resolve_model(str(tmp_path))


def test_crash_mid_conversion_leaves_nothing_used(tmp_path: Path) -> None:
    def crashing(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        resolve_model("smollm2-135m", cache=tmp_path, converter=crashing)
    assert not (tmp_path / "models" / "smollm2-135m").exists()
    assert [p.name for p in (tmp_path / "models").iterdir()] == []
    resolved = resolve_model("smollm2-135m", cache=tmp_path, converter=_fake_converter)
    assert (resolved.path / COMPLETE_MARKER).exists()


def _slow_counting_converter(gguf: Path, out: Path) -> None:
    counter = out.parent.parent / "conversions"
    with open(counter, "a") as handle:
        handle.write("x")
    time.sleep(0.5)
    _fake_converter(gguf, out)


def _resolve_in_child(cache: str) -> None:
    resolve_model("smollm2-135m", cache=Path(cache), converter=_slow_counting_converter)


def test_concurrent_starts_convert_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_resolve_in_child, args=(str(tmp_path),)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert (tmp_path / "conversions").read_text() == "x"


def test_conversion_writes_the_model_cards_sampling_into_generation_config(tmp_path: Path) -> None:
    resolved = resolve_model("smollm2-135m", cache=tmp_path, converter=_fake_converter)
    config = json.loads((resolved.path / "generation_config.json").read_text())
    assert (config["temperature"], config["top_p"]) == (0.2, 0.9)
    assert (resolved.path / COMPLETE_MARKER).read_text().strip() == str(LAYOUT_VERSION)


def test_a_directory_converted_by_an_older_dpserve_is_upgraded_in_place(tmp_path: Path) -> None:
    old = tmp_path / "models" / "smollm2-135m"
    old.mkdir(parents=True)
    _fake_converter(old, old)
    (old / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "bos_token_id": 1}))
    (old / COMPLETE_MARKER).write_text("ok\n")

    def must_not_run(gguf: Path, out: Path) -> None:
        raise AssertionError("an upgrade must not convert again")

    resolved = resolve_model("smollm2-135m", cache=tmp_path, converter=must_not_run)
    assert resolved.path == old
    config = json.loads((old / "generation_config.json").read_text())
    assert config == {"eos_token_id": 2, "bos_token_id": 1, "temperature": 0.2, "top_p": 0.9}
    assert (old / COMPLETE_MARKER).read_text().strip() == str(LAYOUT_VERSION)
