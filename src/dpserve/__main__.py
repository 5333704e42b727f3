"""`python -m dpserve` — same as the `dpserve` console script."""

from dpserve.cli import main

if __name__ == "__main__":  # not when a spawned child (the engine core) re-imports us
    raise SystemExit(main())
