"""POST /workers' optional `name` and `restarts` (a launcher's word on its replica): 400s naming the field."""

from __future__ import annotations

import pytest

from dpserve.errors import HTTPError
from dpserve.gateway.worker import ReplicaOrigin, replica_origin


def test_absent_fields_mean_a_worker_added_by_hand() -> None:
    assert replica_origin({"url": "http://x:1"}) == ReplicaOrigin(None, 0)
    assert replica_origin({"name": "r0", "restarts": 3}) == ReplicaOrigin("r0", 3)


@pytest.mark.parametrize(("body", "param"), [
    ({"name": ""}, "name"), ({"name": "x" * 65}, "name"), ({"name": "<script>"}, "name"),
    ({"name": 7}, "name"), ({"name": "r 0"}, "name"), ({"restarts": -1}, "restarts"),
    ({"restarts": True}, "restarts"), ({"restarts": 1.5}, "restarts"), ({"restarts": 10**12}, "restarts"),
    ({"restarts": "2"}, "restarts")])
def test_bad_values_are_a_400_naming_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(HTTPError) as info:
        replica_origin(body)
    assert (info.value.status, info.value.param) == (400, param)
