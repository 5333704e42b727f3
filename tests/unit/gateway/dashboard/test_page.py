"""The page is one self-contained document: CSS and JS inlined, nothing fetched from elsewhere, and a
CSP that allows exactly the inlined script and style."""

from __future__ import annotations

import base64
import hashlib
import re

from dpserve.gateway.dashboard.page import dashboard_page


def _sha(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def test_css_and_js_are_inlined_and_allowed_by_hash() -> None:
    page = dashboard_page()
    html = page.body.decode()
    assert "/*DASHBOARD_CSS*/" not in html and "/*DASHBOARD_JS*/" not in html
    [script] = re.findall(r"<script>(.*?)</script>", html, re.S)
    [style] = re.findall(r"<style>(.*?)</style>", html, re.S)
    csp = page.headers["Content-Security-Policy"]
    assert f"script-src {_sha(script)};" in csp and f"style-src {_sha(style)};" in csp
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert page.headers["Content-Type"].startswith("text/html")


def test_nothing_is_loaded_from_another_origin_and_no_server_text_becomes_html() -> None:
    html = dashboard_page().body.decode()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html and "eval(" not in html
    assert 'rel="icon" href="data:,"' in html  # no /favicon.ico request (a 404 in the console)
