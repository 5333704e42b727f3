"""`dpserve sim`: serve one simulated replica with the engine's HTTP surface."""

from __future__ import annotations

from dpserve.config import CommonOptions
from dpserve.sim.config import SimConfig

CONFIG_CLASS = SimConfig
# Exit status after --refuse-after shut the replica down: a failure, as a supervisor should see it.
REFUSED_EXIT_CODE = 3


def run(config: SimConfig, common: CommonOptions) -> int:
    from dpserve.http_server import run_app
    from dpserve.serving.app import create_replica_app
    from dpserve.sim.engine import SimEngine
    from dpserve.sim.faults import DyingEngine, FaultInjector

    faults = FaultInjector(config.faults)
    client = DyingEngine(SimEngine(config.engine))
    app = create_replica_app(client, config.model_name, middlewares=[faults.middleware], limits=config.limits)
    run_app(app, config.host, config.port)
    return REFUSED_EXIT_CODE if faults.has_refused else 0
