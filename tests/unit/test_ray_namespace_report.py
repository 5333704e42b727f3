"""The Ray tests' namespace runner reads the inner run's JUnit XML: a failure or an error there
must fail the outer test, never pass it (tests/ray/netns.py)."""

from __future__ import annotations

from pathlib import Path

from tests.ray import netns

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.ray.test_x" name="test_ok" time="1.0" />
<testcase classname="tests.ray.test_x" name="test_bad" time="1.0">
  <failure message="assert 1 == 2">tb</failure></testcase>
<testcase classname="tests.ray.test_x" name="test_teardown" time="1.0">
  <error message="teardown">boom</error></testcase>
<testcase classname="tests.ray.test_x" name="test_skip" time="0"><skipped message="no GPU" /></testcase>
</testsuite></testsuites>"""


def test_each_outcome_is_read(tmp_path: Path) -> None:
    (tmp_path / "junit.xml").write_text(JUNIT)
    outcomes = netns.read_junit(tmp_path / "junit.xml")
    assert {name: o.status for name, o in outcomes.items()} == {
        "test_ok": "passed", "test_bad": "failed", "test_teardown": "failed", "test_skip": "skipped"}
    assert "assert 1 == 2" in outcomes["test_bad"].text and "boom" in outcomes["test_teardown"].text
    assert outcomes["test_skip"].text == "no GPU"


def test_tests_are_listed_in_file_order_without_importing(tmp_path: Path) -> None:
    module = tmp_path / "test_m.py"
    module.write_text("import not_installed_anywhere\n\ndef test_b(): ...\nasync def test_a(): ...\n"
                      "def helper(): ...\nclass TestC: ...\n")
    assert netns.test_names(module) == ["test_b", "test_a"]
