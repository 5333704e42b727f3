"""serve's Prometheus scrape config: the gateway and each launched replica as targets; the admin key
only in a 0600 file."""

from __future__ import annotations

import stat
from pathlib import Path

import yaml

from dpserve.launcher.prometheus_config import GATEWAY_JOB, REPLICAS_JOB, scrape_config, write_scrape_config


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


def test_the_example_in_deploy_has_the_same_jobs() -> None:
    example = yaml.safe_load((Path(__file__).parents[3] / "deploy" / "prometheus.yml").read_text())
    assert [job["job_name"] for job in example["scrape_configs"]] == [GATEWAY_JOB, REPLICAS_JOB]
