"""`python -m dpserve` — same as the `dpserve` console script."""

from dpserve.cli import main

raise SystemExit(main())
