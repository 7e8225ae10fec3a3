"""Liveness and readiness: /healthz needs nothing, /readyz needs the database."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client


@pytest.mark.django_db
def test_healthz_and_readyz_answer_when_all_is_well() -> None:
    client = Client()
    live = client.get("/healthz")
    assert (live.status_code, live.content) == (200, b"ok\n")
    ready = client.get("/readyz")
    assert (ready.status_code, ready.content) == (200, b"ready\n")
    assert client.head("/healthz").status_code == 200


@pytest.mark.django_db
def test_readyz_says_503_when_the_database_does_not_answer(monkeypatch: Any) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr("django.db.backends.utils.CursorWrapper.execute", refuse)
    client = Client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert (ready.status_code, ready.content) == (503, b"database unavailable\n")


@pytest.mark.django_db
def test_health_endpoints_take_no_writes() -> None:
    client = Client()
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405
