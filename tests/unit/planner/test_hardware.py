"""GPU table and --gpu-spec files."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpserve.config import ConfigError
from dpserve.planner.hardware import BUILTIN_GPUS, HardwareError, get_gpu, load_gpu_spec


def test_the_table_has_the_issue_gpus_with_published_figures() -> None:
    assert set(BUILTIN_GPUS) == {"H100-80GB", "H200", "A100-80GB", "L40S", "A10G", "B200"}
    h100 = get_gpu("h100-80gb")  # case-insensitive
    assert (h100.memory_gb, h100.hbm_gb_s, h100.bf16_tflops, h100.fp8_tflops, h100.link_gb_s) == (
        80, 3350, 989, 1979, 450)
    assert get_gpu("A100-80GB").fp8_tflops is None  # Ampere has no FP8 tensor cores
    assert get_gpu("L40S").link == "pcie" and get_gpu("B200").memory_gb == 180
    # NVLink SHARP on the NVSwitch boards from Hopper on; not the A100's switch, not PCIe
    assert [g.name for g in BUILTIN_GPUS.values() if g.nvls] == ["H100-80GB", "H200", "B200"]


def test_unknown_gpu_names_the_valid_ones() -> None:
    with pytest.raises(HardwareError, match=r"unknown GPU 'H100'.*did you mean H100-80GB.*--gpu-spec"):
        get_gpu("H100")


def test_spec_file_round_trip_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "gpu.yaml"
    good.write_text("name: MI300X\nmemory_gb: 192\nhbm_gb_s: 5300\nbf16_tflops: 1307\nfp8_tflops: 2615\n"
                    "link_gb_s: 64\nlink: pcie\n")
    spec = load_gpu_spec(good)
    assert (spec.name, spec.memory_bytes, spec.fp8_tflops, spec.link) == ("MI300X", 192e9, 2615.0, "pcie")
    good.write_text("name: GB200\nmemory_gb: 186\nhbm_gb_s: 8000\nbf16_tflops: 2500\nlink_gb_s: 900\n"
                    "nvls: true\n")
    assert load_gpu_spec(good).nvls is True
    cases = {"memory_gb: 80\n": "missing key", "name: x\nmemory_gb: 80\nhbm_gb_s: 1\nbf16_tflops: 1\n"
             "link_gb_s: 1\nhbm: 3\n": "unknown key", "name: x\nmemory_gb: lots\nhbm_gb_s: 1\n"
             "bf16_tflops: 1\nlink_gb_s: 1\n": "must be a number", "[1, 2]": "mapping",
             "name: x\nmemory_gb: 0\nhbm_gb_s: 1\nbf16_tflops: 1\nlink_gb_s: 1\n":
                 r"memory_gb must be a finite number in \[1, 10000\], got 0",
             "name: x\nmemory_gb: 8\nhbm_gb_s: 1\nbf16_tflops: 1\nlink_gb_s: 1\nnvls: maybe\n":
                 "nvls must be"}
    for text, message in cases.items():
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(HardwareError, match=message):
            load_gpu_spec(bad)
    with pytest.raises(ConfigError, match="cannot read --gpu-spec"):
        load_gpu_spec(tmp_path / "missing.yaml")


GOOD = {"name": "X", "memory_gb": 80, "hbm_gb_s": 3350, "bf16_tflops": 989, "link_gb_s": 450}
# A YAML value of 9^9 strings as shared lists (an "alias bomb"): cheap to load, huge to repr or str().
ALIAS_BOMB = "\n  - &a0 [x, x, x, x, x, x, x, x, x]" + "".join(
    f"\n  - &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9))


@pytest.mark.parametrize(("field", "value", "message"), [
    ("memory_gb", ".inf", "memory_gb must be a finite number in \\[1, 10000\\], got inf"),  # NaN // x
    ("memory_gb", "1.0e+30", "memory_gb must be .* got 1e\\+30"),  # KV tokens beyond 64-bit --json
    ("memory_gb", "1" + "0" * 400, "memory_gb must be .* got 1000"),  # float() would overflow
    ("memory_gb", ".nan", "memory_gb must be .* got nan"),
    ("hbm_gb_s", "1.0e-300", "hbm_gb_s must be .* got 1e-300"),  # 1e300 ms steps
    ("hbm_gb_s", ".inf", "hbm_gb_s must be"),  # written as null in --json
    ("link_gb_s", "1.0e-300", "link_gb_s must be"),
    ("link_latency_us", ".nan", "link_latency_us must be .* got nan"),  # NaN passed `< 0`
    ("link_latency_us", ".inf", "link_latency_us must be"),
    ("bf16_tflops", ".inf", "bf16_tflops must be"),
    ("fp8_tflops", ".inf", "fp8_tflops must be .* or absent, got inf"),
    ("name", "{a: 1}", "name must be a non-empty string, got \\{'a': 1\\}"),  # str() of it before
    ("name", "null", "name must be a non-empty string, got None"),
])
def test_spec_figures_must_be_finite_and_plausible(tmp_path: Path, field: str, value: str,
                                                   message: str) -> None:
    spec = tmp_path / "gpu.yaml"
    spec.write_text("".join(f"{k}: {v}\n" for k, v in {**GOOD, field: value}.items()))
    with pytest.raises(HardwareError, match=message):
        load_gpu_spec(spec)


@pytest.mark.timeout(10)  # without short reprs the message took minutes and gigabytes
@pytest.mark.parametrize(("field", "message"), [("memory_gb", "memory_gb must be a number, got \\[\\["),
                                              ("name", "name must be a non-empty string, got \\[\\[")])
def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path: Path, field: str, message: str) -> None:
    spec = tmp_path / "gpu.yaml"
    spec.write_text("".join(f"{k}: {v}\n" for k, v in {**GOOD, field: ALIAS_BOMB}.items()))
    with pytest.raises(HardwareError, match=message) as err:
        load_gpu_spec(spec)
    assert len(str(err.value)) < len(str(spec)) + 200
