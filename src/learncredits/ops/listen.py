"""Where a server started here can be reached, for the links it sends."""

from __future__ import annotations

import socket


def listen_url(host: str, port: int) -> str:
    """The address people reach this server at, for links in emails and payment returns
    when ``LEARNCREDITS_BASE_URL`` is not set: the one it listens on (this machine's name
    when it listens on every interface)."""
    if host in {"", "0.0.0.0", "::"}:  # noqa: S104 - naming the wildcard, not binding it
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
