"""`python -m dpserve.model_store NAME`: convert a bundled model once and print its directory (as
`make model` does). Through the package, not `-m dpserve.model_store.resolver`, which runs a module
the package has already imported (runpy's RuntimeWarning on every `make run`)."""

from dpserve.model_store.resolver import main

raise SystemExit(main())
