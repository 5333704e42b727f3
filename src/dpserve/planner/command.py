"""`dpserve plan`: predict every DP × TP × PP layout and recommend one; --simulate; --diagnose a fleet."""

from __future__ import annotations

import sys

from dpserve.config import CommonOptions, ConfigError
from dpserve.planner.config import PlanConfig

CONFIG_CLASS = PlanConfig


def run(config: PlanConfig, common: CommonOptions) -> int:
    """Bad input (unknown GPU or model, malformed config, nothing fits, figures out of range)
    raises ConfigError: the CLI prints it on stderr and exits 2."""
    if config.diagnose is not None:
        from dpserve.planner.diagnose import run_diagnose

        return run_diagnose(config)
    from dpserve.planner.architecture import ArchitectureError
    from dpserve.planner.hardware import HardwareError
    from dpserve.planner.plan import make_plan
    from dpserve.planner.recommend import PlanError

    try:
        plan = make_plan(config)
    except (HardwareError, ArchitectureError, PlanError) as exc:
        raise ConfigError(str(exc)) from exc
    except ConfigError:
        raise
    except (ArithmeticError, ValueError) as exc:
        # A backstop: the inputs' bounds (PlanConfig, architecture, hardware) keep the model's math
        # finite; should one slip through, the user still gets one line, not a traceback.
        raise ConfigError(f"the model, GPU or workload figures are out of the planner's range "
                          f"({type(exc).__name__}: {exc})") from exc
    result = plan.to_json()
    text = plan.to_text()
    if config.simulate:
        from dpserve.planner.simulate import simulate_plan

        sims = simulate_plan(config, plan)
        result["simulated"] = [s.to_json() for s in sims]
        from dpserve.planner.simulate import simulated_text

        text += "\n\n" + simulated_text(sims)
    _print(result if config.as_json else text)
    return 0


def _print(out: object) -> None:
    if sys.stdout is None:  # started with stdout closed: nothing can be shown
        return
    if isinstance(out, dict):
        import orjson

        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.flush()
    else:
        print(out, flush=True)
