"""A URL map for the error-page tests: the service's own, plus views that fail on purpose."""

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.urls import path

from learncredits.urls import urlpatterns as service


def _crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


def _forbidden(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


def _bad(request: HttpRequest) -> HttpResponse:
    raise SuspiciousOperation("bad")


urlpatterns = [
    path("fails/500", _crash),
    path("fails/403", _forbidden),
    path("fails/400", _bad),
    *service,
]
