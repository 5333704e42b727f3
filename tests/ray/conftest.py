"""Ray tests: outside the namespace, each module is one run inside it (netns.py) whose results are
reported test by test; inside it, the fixtures start a real two-node Ray cluster on 127.0.0.1."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ray.netns import Outcome, inside_namespace, run_module, test_names, why_not_runnable

_MODULE_TIMEOUT_S = 600.0


class NamespacedFailure(Exception):
    """A test that failed inside the namespace; its text is the inner report."""


class NamespacedModule(pytest.File):
    """A Ray test module seen from outside: its tests, run all at once in a namespace on first use."""

    _outcomes: dict[str, Outcome] | None = None
    _output = ""

    def collect(self) -> Iterator[pytest.Item]:
        for name in test_names(self.path):
            item = NamespacedTest.from_parent(self, name=name)
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.timeout(_MODULE_TIMEOUT_S + 60))  # the first one runs them all
            yield item

    def outcome(self, name: str) -> Outcome:
        if self._outcomes is None:
            selected = [item.name for item in self.session.items if item.parent is self]
            self._outcomes, self._output = self._run(selected)
        found = self._outcomes.get(name)
        if found is None:
            return Outcome("failed", f"{name} did not run in the namespace; its output ended with:\n"
                                     f"{self._output[-6000:]}")
        return found

    def _run(self, selected: list[str]) -> tuple[dict[str, Outcome], str]:
        """One namespace run of the module's selected tests. Its files go to a directory of its own
        (not pytest's shared basetemp, which other pytest runs on the machine prune), kept only on
        failure."""
        work_dir = Path(tempfile.mkdtemp(prefix="dpserve-ray-tests-"))
        outcomes, output = run_module(self.path, selected, work_dir, _MODULE_TIMEOUT_S)
        if outcomes and all(o.status != "failed" for o in outcomes.values()):
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            output += f"\n(logs kept in {work_dir})"
        return outcomes, output


class NamespacedTest(pytest.Item):
    def runtest(self) -> None:
        reason = why_not_runnable()
        if reason is not None:
            pytest.skip(reason)
        parent = self.parent
        assert isinstance(parent, NamespacedModule)
        outcome = parent.outcome(self.name)
        if outcome.status == "skipped":
            pytest.skip(outcome.text)
        if outcome.status == "failed":
            raise NamespacedFailure(outcome.text)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, NamespacedFailure):
            return f"(ran inside the Ray test namespace)\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.name} [in a network namespace]"


if not inside_namespace():
    def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.File | None:
        if module_path.name.startswith("test_"):
            return NamespacedModule.from_parent(parent, path=module_path)
        return None
