"""The operator console's static files, served by the admin app over a real socket.

The page itself needs no token (it holds no data) and carries a strict Content-Security-Policy;
the JSON routes it calls keep their token rules. The console's behaviour in a browser is
tests/e2e/test_console_browser.py.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.http import AdminHttpServer, build_app
from adapters.http.app import CONSOLE_CSP
from tests.adapter.test_http import TOKEN, CannedControl

pytestmark = pytest.mark.timeout(30)

CONSOLE_DIR = Path(__file__).resolve().parents[2] / "adapters" / "http" / "console"
ASSETS = {
    "/": "text/html; charset=utf-8",
    "/console/index.html": "text/html; charset=utf-8",
    "/console/console.js": "text/javascript; charset=utf-8",
    "/console/console.css": "text/css; charset=utf-8",
    "/console/favicon.svg": "image/svg+xml",
}


@pytest.fixture
def authed() -> Iterator[httpx.Client]:
    server = AdminHttpServer(
        build_app(CannedControl(), token=TOKEN, rehearsal=True), host="127.0.0.1", port=0
    )
    server.start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10.0)
    yield client
    client.close()
    server.stop()


class TestConsolePages:
    @pytest.mark.parametrize(("path", "content_type"), ASSETS.items())
    def test_each_asset_is_served_without_a_token_with_strict_headers(
        self, authed: httpx.Client, path: str, content_type: str
    ) -> None:
        response = authed.get(path)

        assert response.status_code == 200
        assert response.headers["content-type"] == content_type
        assert response.headers["content-security-policy"] == CONSOLE_CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        name = "index.html" if path == "/" else path.rsplit("/", 1)[1]
        assert response.content == (CONSOLE_DIR / name).read_bytes()

    def test_the_policy_allows_only_this_origin_and_no_inline_script(self) -> None:
        directives = dict(directive.strip().split(" ", 1) for directive in CONSOLE_CSP.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'"
        assert directives["connect-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in CONSOLE_CSP and "unsafe-eval" not in CONSOLE_CSP

    def test_the_page_has_no_inline_script_style_or_foreign_url(self) -> None:
        html = (CONSOLE_DIR / "index.html").read_text()
        # Every script is a file of this origin; no handler attributes, no style attributes.
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/console/console.js" defer>']
        assert not re.search(r"\son[a-z]+\s*=", html)
        assert " style=" not in html
        for name in ("index.html", "console.js", "console.css"):
            text = (CONSOLE_DIR / name).read_text()
            assert "http://" not in text and "https://" not in text, name

    def test_the_script_never_stores_the_token(self) -> None:
        # The code, without its comments (which say where the token is not kept).
        script = "\n".join(
            line
            for line in (CONSOLE_DIR / "console.js").read_text().splitlines()
            if not line.strip().startswith("//")
        )
        for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
            assert storage not in script
        assert "location.hash" not in script and "history.pushState" not in script

    def test_an_unknown_asset_is_a_json_404(self, authed: httpx.Client) -> None:
        for path in ("/console/nope.js", "/console/..%2Fapp.py", "/console/app.py"):
            response = authed.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"] == "NOT_FOUND"

    def test_posting_to_the_page_is_refused(self, authed: httpx.Client) -> None:
        response = authed.post("/")

        assert response.status_code == 405
        assert response.json()["error"] == "METHOD_NOT_ALLOWED"

    def test_head_of_the_page_answers_without_a_body(self, authed: httpx.Client) -> None:
        response = authed.head("/")

        assert response.status_code == 200
        assert response.content == b""


class TestPackaging:
    def test_every_console_file_is_package_data(self) -> None:
        # A wheel install serves the page only if setuptools ships every file.
        pyproject = tomllib.loads((CONSOLE_DIR.parents[2] / "pyproject.toml").read_text())
        patterns = pyproject["tool"]["setuptools"]["package-data"]["adapters.http"]
        for path in CONSOLE_DIR.iterdir():
            relative = f"console/{path.name}"
            assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


class TestDataRoutesKeepTheirTokenRules:
    @pytest.mark.parametrize(
        "path", ["/execution/status", "/execution/gates", "/execution/kill-switch", "/status"]
    )
    def test_operator_text_still_needs_the_token(self, authed: httpx.Client, path: str) -> None:
        response = authed.get(path)

        assert response.status_code == 401
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "content-security-policy" not in response.headers

    @pytest.mark.parametrize("path", ["/execution/status", "/status"])
    def test_the_status_answers_with_the_token(self, authed: httpx.Client, path: str) -> None:
        response = authed.get(path, headers={"Authorization": f"Bearer {TOKEN}"})

        assert response.status_code == 200
        assert response.json()["mode"] == "PAPER"

    def test_a_post_still_needs_the_token(self, authed: httpx.Client) -> None:
        assert authed.post("/execution/pause").status_code == 401

    def test_the_token_is_never_in_a_console_answer(self, authed: httpx.Client) -> None:
        for path in ASSETS:
            response = authed.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert TOKEN not in response.text
            assert TOKEN not in str(response.headers)
