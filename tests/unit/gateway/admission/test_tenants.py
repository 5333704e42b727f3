from pathlib import Path

import pytest

from dpserve.config import ConfigError
from dpserve.gateway.admission.rejection import Rejection
from dpserve.gateway.admission.tenants import TenantLimits, bearer_key, load_key_file

GOOD = """
keys:
  - {key: sk-a1, tenant: team-a, requests_per_minute: 60, tokens_per_minute: 1000, max_concurrency: 2}
  - {key: sk-a2, tenant: team-a, requests_per_minute: 60, tokens_per_minute: 1000, max_concurrency: 2}
  - {key: sk-b, tenant: team-b}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    return path


def test_keys_map_to_tenants_with_limits(tmp_path: Path) -> None:
    ring = load_key_file(_write(tmp_path, GOOD))
    a = ring.identify({"Authorization": "Bearer sk-a2"})
    assert a.name == "team-a"
    assert a.limits == TenantLimits(60, 1000, 2)
    b = ring.identify({"authorization": "bearer  sk-b "})
    assert b.name == "team-b" and not b.limits.any
    assert sorted(t.name for t in ring.tenants) == ["team-a", "team-b"]


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_api_key"),
    ({"Authorization": "Basic sk-a1"}, "missing_api_key"),
    ({"Authorization": "Bearer "}, "missing_api_key"),
    ({"Authorization": "Bearer sk-nope"}, "invalid_api_key"),
])
def test_missing_or_unknown_key_is_401(tmp_path: Path, headers: dict[str, str], code: str) -> None:
    ring = load_key_file(_write(tmp_path, GOOD))
    with pytest.raises(Rejection) as info:
        ring.identify(headers)
    assert info.value.status == 401 and info.value.code == code


def test_bearer_key_is_case_insensitive_on_header_name() -> None:
    assert bearer_key({"AUTHORIZATION": "Bearer k"}) == "k"


@pytest.mark.parametrize("text, fragment", [
    ("keys: []", "non-empty 'keys:' list"),
    ("- key: a", "non-empty 'keys:' list"),
    ("keys: [oops]", r"keys\[0\]: must be a mapping"),
    ("keys: [{key: a}]", r"keys\[0\]: 'tenant'"),
    ("keys: [{tenant: t}]", r"keys\[0\]: 'key'"),
    ("keys: [{key: a, tenant: t, rpm: 3}]", "unknown field.*rpm"),
    ("keys: [{key: a, tenant: t, requests_per_minute: 0}]", "requests_per_minute must be a positive"),
    ("keys: [{key: a, tenant: t, max_concurrency: true}]", "max_concurrency must be a positive"),
    ("keys: [{key: a, tenant: t}, {key: a, tenant: u}]", r"keys\[1\]: duplicate key"),
    ("keys: [{key: a, tenant: t}, {key: b, tenant: t, max_concurrency: 1}]", "different limits"),
    ("keys: [a: b: c", "not valid YAML"),
])
def test_bad_key_file_is_a_clear_config_error(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_key_file(_write(tmp_path, text))


def test_unreadable_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read --api-keys file"):
        load_key_file(tmp_path / "missing.yaml")
