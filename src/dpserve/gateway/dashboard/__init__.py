"""The gateway's live dashboard (issue 18): `GET /dashboard` (one self-contained page) and its JSON.

`sampler.py` samples the fleet once a second (replicas' scrapes from the load poller + the gateway's
own counters) into `sample.py`'s Sample and a 15-minute `ring.py`; `diagnosis.py` (package root)
names the bottleneck; `snapshot.py` is the JSON document; `page.py` the page; `view.py` ties them
for the routes.
"""

from dpserve.gateway.dashboard.view import Dashboard

__all__ = ["Dashboard"]
