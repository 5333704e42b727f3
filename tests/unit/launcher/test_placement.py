"""Placement arithmetic: GPUs by CUDA_VISIBLE_DEVICES (no GPU needed), CPU core splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpserve.launcher.placement import (
    PlacementError,
    detect_gpu_ids,
    parse_visible_devices,
    place_on_cpus,
    place_on_gpus,
)


def test_gpus_are_split_into_consecutive_tp_groups() -> None:
    placements = place_on_gpus(2, 2, ["0", "1", "2", "3"])
    assert [p.env()["CUDA_VISIBLE_DEVICES"] for p in placements] == ["0,1", "2,3"]


def test_gpu_ids_keep_the_given_order_and_leftovers_stay_unused() -> None:
    placements = place_on_gpus(3, 1, ["3", "1", "7", "5"])
    assert [p.gpu_ids for p in placements] == [("3",), ("1",), ("7",)]


def test_gpu_placement_sets_no_thread_limits() -> None:
    env = place_on_gpus(1, 1, ["0"])[0].env()
    assert env == {"CUDA_VISIBLE_DEVICES": "0"}


def test_too_few_gpus_states_the_arithmetic() -> None:
    with pytest.raises(PlacementError) as info:
        place_on_gpus(3, 2, ["0", "1", "2", "3"])
    assert "3 replicas × TP 2 × PP 1 = 6 GPUs needed, but 4 available" in str(info.value)


def test_no_gpus_at_all_is_the_same_error() -> None:
    with pytest.raises(PlacementError, match=r"1 replicas × TP 1 × PP 1 = 1 GPUs needed, but 0 available"):
        place_on_gpus(1, 1, [])


def test_two_replicas_on_two_cores_get_one_core_and_one_thread_each() -> None:
    placements = place_on_cpus(2, [0, 1])
    assert [(p.cpu_cores, p.num_threads) for p in placements] == [((0,), 1), ((1,), 1)]
    assert placements[0].env() == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
                                   "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def test_uneven_core_split_differs_by_at_most_one_and_is_disjoint() -> None:
    placements = place_on_cpus(3, [4, 5, 6, 7, 8, 9, 10])
    assert [p.cpu_cores for p in placements] == [(4, 5, 6), (7, 8), (9, 10)]
    assert [p.num_threads for p in placements] == [3, 2, 2]


def test_more_replicas_than_cores_share_cores_round_robin() -> None:
    placements = place_on_cpus(3, [0, 1])
    assert [p.cpu_cores for p in placements] == [(0,), (1,), (0,)]
    assert all(p.num_threads == 1 for p in placements)


def test_no_cores_is_an_error() -> None:
    with pytest.raises(PlacementError):
        place_on_cpus(1, [])


def test_visible_devices_parsing() -> None:
    assert parse_visible_devices("2, 3,") == ("2", "3")
    assert parse_visible_devices("") == ()


def test_detect_prefers_cuda_visible_devices(tmp_path: Path) -> None:
    assert detect_gpu_ids({"CUDA_VISIBLE_DEVICES": "4,6"}, tmp_path) == ("4", "6")


def test_detect_counts_driver_entries(tmp_path: Path) -> None:
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (tmp_path / bus).mkdir()
    assert detect_gpu_ids({}, tmp_path) == ("0", "1")
    assert detect_gpu_ids({}, tmp_path / "missing") == ()
