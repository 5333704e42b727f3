"""The placement groups of one deployment: one per replica start, named after the deployment.

A group that Ray cannot place within the startup timeout is removed again and reported with what
it asked and what the cluster has, never left pending. Every group we created and did not remove
yet is tracked, so `remove_all` leaves nothing of ours behind.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from dpserve.aio import wait_for
from dpserve.config import ConfigError
from dpserve.launcher.on_ray.bundles import STRATEGY, describe_nodes, format_resources
from dpserve.launcher.on_ray.connection import alive_nodes, available_resources
from dpserve.launcher.runtime import StartError

logger = logging.getLogger(__name__)


class PlacementGroups:
    """Creates, places and removes this deployment's groups (all of one bundle shape)."""

    def __init__(self, prefix: str, bundle: Mapping[str, float]) -> None:
        self.prefix = prefix  # "dpserve-<deployment id>": every group and actor name starts with it
        self.bundle = dict(bundle)
        self._live: dict[Any, str] = {}  # group → name, until removed
        self._initial: dict[str, Any] = {}  # replica id → group placed up front, for its first start
        self._created = 0

    def place_all(self, replica_ids: Sequence[str], timeout_s: float) -> None:
        """Place one group per replica up front (blocking) — all of them within timeout_s, or none:
        a cluster without room is a clear error at start, not replicas that never come."""
        import ray

        groups = [self._create(rid) for rid in replica_ids]
        _, pending = ray.wait([g.ready() for g in groups], num_returns=len(groups), timeout=timeout_s)
        if pending:
            self.remove_all()
            raise ConfigError(self._not_placed(len(pending), len(groups), timeout_s))
        self._initial = dict(zip(replica_ids, groups, strict=True))
        logger.info("Ray placed %d placement group(s) %s-* of {%s} (%s)", len(groups), self.prefix,
                    format_resources(self.bundle), STRATEGY)

    async def take_or_place(self, replica_id: str, timeout_s: float) -> Any:
        """The group placed up front for this replica's first start, else a new one once Ray has
        placed it (StartError after timeout_s, the group removed)."""
        group = self._initial.pop(replica_id, None)
        if group is not None:
            return group
        group = self._create(replica_id)
        try:
            await wait_for(group.ready(), timeout_s)
        except TimeoutError:
            self.remove(group)
            raise StartError(self._not_placed(1, 1, timeout_s)) from None
        except BaseException:
            self.remove(group)
            raise
        return group

    def remove(self, group: Any) -> None:
        import ray

        if self._live.pop(group, None) is None:
            return
        with contextlib.suppress(Exception):  # already gone with its job or its node: nothing to do
            ray.util.remove_placement_group(group)

    def remove_all(self) -> None:
        for group in list(self._live):
            self.remove(group)
        self._initial.clear()

    def _create(self, replica_id: str) -> Any:
        import ray

        self._created += 1
        name = f"{self.prefix}-{replica_id}-{self._created}"
        group = ray.util.placement_group([self.bundle], strategy=STRATEGY, name=name)
        self._live[group] = name
        return group

    def _not_placed(self, pending: int, total: int, timeout_s: float) -> str:
        nodes = alive_nodes()
        return (f"Ray placed {total - pending} of {total} replica(s) within --startup-timeout-s "
                f"{timeout_s:g}: each asks {{{format_resources(self.bundle)}}} on one node ({STRATEGY}); "
                f"the cluster has {format_resources(available_resources())} available now, "
                f"{describe_nodes(nodes)}")
