"""Liveness and readiness answers for a load balancer or an orchestrator.

``/healthz`` says the process serves requests (no database); ``/readyz`` also asks the
database, so a web process that lost it is taken out of rotation instead of answering 500s.
``/healthz`` is also the framework floor of the benchmarks (bench/hot_path.py): the rate a
web process reaches through the whole middleware stack when a request does no work.
"""

from __future__ import annotations

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

from learncredits.db import store


@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")


@require_safe
def readyz(request: HttpRequest) -> HttpResponse:
    try:
        store.ping()
    except DatabaseError:
        return HttpResponse("database unavailable\n", status=503, content_type="text/plain")
    return HttpResponse("ready\n", content_type="text/plain")
