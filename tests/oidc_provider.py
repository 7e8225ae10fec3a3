"""A real OpenID Connect provider for the single sign-on tests: the npm package
``oidc-provider`` (tests/oidc/), run by the machine's Node.js on a free port.

``npm ci`` installs it into tests/oidc/node_modules the first time (from the committed
package-lock.json, so every machine runs the same provider); later runs reuse that folder.
Without Node.js the tests are skipped with the reason, or fail when
LEARNCREDITS_REQUIRE_BROWSER=1, as the browser tests do.

``sign_in_at_provider`` plays the person at the provider without a browser: it follows the
authorization request through the library's development sign-in and consent pages (plain
HTML forms) and returns the redirect back to us, with its code and state.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from tests.conftest import HOST, free_port, skip_unless_required
from tests.npm import npm_ci

HERE = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "learncredits-test"
CLIENT_SECRET = "test-client-secret-that-must-never-be-stored-in-clear"

# The people the provider knows: the account id typed at its sign-in page is the email.
ACCOUNTS: dict[str, dict[str, Any]] = {
    "ada@acme.example": {"email": "ada@acme.example", "email_verified": True, "name": "Ada Byron"},
    "bob@acme.example": {"email": "bob@acme.example", "email_verified": True, "name": "Bob Stone"},
    "olga@acme.example": {"email": "olga@acme.example", "email_verified": True, "name": "Olga"},
    "nina@acme.example": {"email": "nina@acme.example", "email_verified": False, "name": "Nina"},
    "carl@acme.example": {"email": "carl@acme.example", "email_verified": True, "name": "Carl"},
    "eve@elsewhere.example": {
        "email": "eve@elsewhere.example",
        "email_verified": True,
        "name": "Eve Outsider",
    },
}


def node_missing() -> str | None:
    """Why the provider cannot run here, or None when it can."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (Debian packages 'nodejs' and 'npm')"
    return None


def ensure_installed() -> None:
    """``npm ci`` into tests/oidc when its node_modules is missing (one process at a time)."""
    npm_ci(HERE, HERE / "node_modules" / "oidc-provider" / "package.json")


@dataclass
class Provider:
    issuer: str
    client_id: str
    client_secret: str
    log: Path


@contextlib.contextmanager
def running_provider(redirect_uris: list[str], log_dir: Path) -> Iterator[Provider]:
    """The provider, listening on a free port of 127.0.0.1 until the block ends."""
    missing = node_missing()
    if missing:
        skip_unless_required(
            f"OpenID provider test SKIPPED: {missing}", "LEARNCREDITS_REQUIRE_BROWSER"
        )
    ensure_installed()
    port = free_port()
    config = {
        "port": port,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": redirect_uris,
        "accounts": ACCOUNTS,
    }
    log = log_dir / f"oidc-provider-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["node", "provider.mjs"],
            cwd=HERE,
            env={"PATH": "/usr/bin:/bin:/usr/local/bin", "OIDC_TEST_CONFIG": json.dumps(config)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    issuer = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(requests.RequestException):
                found = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2)
                if found.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the OpenID provider did not come up"
            time.sleep(0.1)
        yield Provider(issuer=issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def sign_in_at_provider(authorization_url: str, account: str) -> str:
    """Follow the provider's pages as the person ``account`` would (sign in, then consent)
    and return the URL it finally sends the browser to (our callback, with code and state)."""
    session = requests.Session()
    provider_host = urlsplit(authorization_url).netloc
    url, method, data = authorization_url, "GET", None
    for _step in range(12):
        answer = session.request(method, url, data=data, allow_redirects=False, timeout=10)
        if answer.is_redirect:
            target = urljoin(url, answer.headers["Location"])
            if urlsplit(target).netloc != provider_host:
                return target
            url, method, data = target, "GET", None
            continue
        assert answer.status_code == 200, (answer.status_code, answer.text[:2000])
        form = _FORM.search(answer.text)
        assert form, answer.text[:2000]
        fields = {name: unescape(value) for name, value in _HIDDEN.findall(form.group(2))}
        if fields.get("prompt") == "login":
            fields.update(login=account, password="any")
        url, method, data = urljoin(url, unescape(form.group(1))), "POST", fields
    raise AssertionError("the provider never sent the browser back")
