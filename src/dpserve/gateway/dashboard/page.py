"""The dashboard page: one HTML document with its CSS and JS inlined, built once, with a strict CSP.

The three files live in `static/` (package data); no CDN, no build step. The Content-Security-Policy
allows exactly the inlined script and style (by hash) and requests to this origin only, so replica
or tenant names shown on the page can never run as script.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

_PACKAGE = "dpserve.gateway.dashboard"


@dataclass(frozen=True)
class Page:
    body: bytes
    headers: dict[str, str]


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


@cache
def dashboard_page() -> Page:
    """The page bytes and headers (read from the package once per process)."""
    files = resources.files(_PACKAGE).joinpath("static")
    html = files.joinpath("dashboard.html").read_text("utf-8")
    css = files.joinpath("dashboard.css").read_text("utf-8")
    js = files.joinpath("dashboard.js").read_text("utf-8")
    html = html.replace("/*DASHBOARD_CSS*/", css).replace("/*DASHBOARD_JS*/", js)
    csp = (f"default-src 'none'; script-src {_hash(js)}; style-src {_hash(css)}; connect-src 'self'; "
           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return Page(html.encode("utf-8"), {
        "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})
