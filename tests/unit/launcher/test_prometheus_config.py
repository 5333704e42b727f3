"""serve's Prometheus scrape config: the gateway and each launched replica as targets; the admin key
only in a 0600 file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from dpserve.launcher.prometheus_config import (
    GATEWAY_JOB,
    REPLICAS_JOB,
    ScrapeConfigFile,
    scrape_config,
    write_scrape_config,
)


def test_targets_and_labels() -> None:
    replicas = [("r0", "127.0.0.1:41001"), ("r1", "127.0.0.1:41002")]
    doc = yaml.safe_load(scrape_config("127.0.0.1:8000", replicas, None))
    gateway, replica_job = doc["scrape_configs"]
    assert gateway["job_name"] == GATEWAY_JOB
    assert gateway["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]
    assert "authorization" not in gateway
    assert replica_job["job_name"] == REPLICAS_JOB
    assert replica_job["static_configs"] == [{"targets": ["127.0.0.1:41001"], "labels": {"replica": "r0"}},
                                          {"targets": ["127.0.0.1:41002"], "labels": {"replica": "r1"}}]


def test_the_admin_key_goes_only_into_a_private_file(tmp_path: Path) -> None:
    text = scrape_config("127.0.0.1:8000", [], "s3cret")
    gateway = yaml.safe_load(text)["scrape_configs"][0]
    assert gateway["authorization"] == {"type": "Bearer", "credentials": "s3cret"}
    path = tmp_path / "prometheus.yml"
    write_scrape_config(path, text, secret=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == text
    write_scrape_config(path, "x: 1\n", secret=False)
    assert path.read_text() == "x: 1\n"


def test_a_stale_tmp_file_never_leaks_the_key(tmp_path: Path) -> None:
    path = tmp_path / "prometheus.yml"
    path.with_name("prometheus.yml.tmp").write_text("left by a crash")
    path.with_name("prometheus.yml.tmp").chmod(0o644)
    write_scrape_config(path, "key\n", secret=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _targets(path: Path) -> list[tuple[str, str]]:
    replica_job = yaml.safe_load(path.read_text())["scrape_configs"][1]
    return [(c["labels"]["replica"], c["targets"][0]) for c in replica_job["static_configs"]]


def test_replicas_are_listed_once_their_address_is_known_and_rewritten_when_it_changes(
        tmp_path: Path) -> None:
    """--ray: nothing is known at start; each join writes the file again, only on a change."""
    path = tmp_path / "prometheus.yml"
    scrape = ScrapeConfigFile(path, "127.0.0.1:8000", [("r0", None), ("r1", None)], None)
    scrape.write()
    assert _targets(path) == []
    scrape.set_replica("r1", "10.0.0.2:41000")
    scrape.set_replica("r0", "10.0.0.1:41000")
    assert _targets(path) == [("r0", "10.0.0.1:41000"), ("r1", "10.0.0.2:41000")]  # plan order
    path.unlink()
    scrape.set_replica("r0", "10.0.0.1:41000")  # a rejoin at the same address: no write
    assert not path.exists()
    scrape.set_replica("r0", "10.0.0.2:41001")  # placed again on another node
    assert _targets(path) == [("r0", "10.0.0.2:41001"), ("r1", "10.0.0.2:41000")]
    assert not path.with_name("prometheus.yml.tmp").exists()


def test_an_unwritable_path_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "missing-dir" / "p.yml"
    ScrapeConfigFile(path, "127.0.0.1:8000", [("r0", "127.0.0.1:1")], None).write()
    assert "could not write the Prometheus config" in caplog.text


def test_the_example_in_deploy_has_the_same_jobs() -> None:
    example = yaml.safe_load((Path(__file__).parents[3] / "deploy" / "prometheus.yml").read_text())
    assert [job["job_name"] for job in example["scrape_configs"]] == [GATEWAY_JOB, REPLICAS_JOB]
