"""Which requests may be resumed, and what the client asked for."""

from __future__ import annotations

from typing import Any

import pytest

from dpserve.gateway.migration.eligibility import resume_facts


@pytest.mark.parametrize(("body", "excluded"), [
    ({}, None),
    ({"n": 1, "best_of": 1, "logprobs": False, "tools": [], "echo": False}, None),
    ({"response_format": {"type": "text"}, "seed": 3, "temperature": 0.7, "stop": ["x"]}, None),
    ({"prompt": ["one prompt"]}, None),
    ({"n": 2}, "n"),
    ({"best_of": 3}, "n"),
    ({"prompt": ["a", "b"]}, "n"),
    ({"prompt": [[1, 2], [3]]}, "n"),
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"functions": [{"name": "f"}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "structured_output"),
    ({"response_format": {"type": "json_schema", "json_schema": {}}}, "structured_output"),
    ({"guided_json": {"type": "object"}}, "structured_output"),
    ({"guided_choice": ["a", "b"]}, "structured_output"),
    ({"structured_outputs": {"regex": "a+"}}, "structured_output"),
    ({"logprobs": True}, "logprobs"),
    ({"logprobs": 0}, "logprobs"),  # completions: the sampled token's logprob
    ({"top_logprobs": 2}, "logprobs"),
    ({"echo": True}, "echo"),
])
def test_exclusions(body: dict[str, Any], excluded: str | None) -> None:
    assert resume_facts(body).excluded == excluded


def test_what_the_client_asked_for() -> None:
    facts = resume_facts({"return_token_ids": True, "stream_options": {"include_usage": True}})
    assert facts.wants_token_ids and facts.include_usage
    facts = resume_facts({"return_token_ids": "yes", "stream_options": "x"})
    assert not facts.wants_token_ids and not facts.include_usage
