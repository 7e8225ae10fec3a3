"""Sign-in throttling that cannot be raced: an attempt claims a slot before the password is
checked.

django-axes on its own checks "is this account or address locked?" and records a failure as
two separate steps, so concurrent attempts all pass the check before any failure is counted
(a burst of 30 got 8 password checks through a limit of 5, and the right password in it was
accepted). Here every attempt first claims one slot of the account's budget and one of the
address's budget in the database, with a conditional UPDATE (``failures < limit``) that the
database applies one at a time per row, in every web process alike; an attempt that cannot
claim both is refused without its password being checked. A failed check keeps its slot; a
successful sign-in gives its slot back and resets the account (``AXES_RESET_ON_SUCCESS``).

django-axes keeps everything else: its backend hook and signals, the locked-out page (429,
``AXES_LOCKOUT_TEMPLATE``), its ``AccessAttempt`` and log records for the console, and the
``axes_reset*`` commands. Its handler is subclassed so that its lock decision reads the same
counter the claims write: there is one budget, not two that could disagree.

Settings: ``AUTHENTICATION_BACKENDS`` starts with :class:`ThrottledSignInBackend`;
``AXES_HANDLER`` is :class:`ThrottledSignInHandler`. The keys come from
``AXES_LOCKOUT_PARAMETERS`` (``"username"`` and/or ``"ip_address"``, each its own budget).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.conf import settings as axes_settings
from axes.exceptions import AxesBackendPermissionDenied, AxesBackendRequestParameterRequired
from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import (
    get_client_username,
    get_cool_off,
    get_credentials,
    get_failure_limit,
    get_lockout_message,
    toggleable,
)
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.http import HttpRequest
from django.utils import timezone

from learncredits.tenancy.models import SignInThrottle

Key = tuple[str, str]

# The request attribute listing the slots this request claimed (given back on success).
CLAIMED = "learncredits_signin_claims"
# Keys are stored at most this long; longer values share a budget, which only errs on the
# side of refusing.
MAX_VALUE = 255


def recorded_username(
    request: HttpRequest, credentials: dict[str, Any] | None = None
) -> str | None:
    """The name a sign-in attempt is counted and recorded under (``AXES_USERNAME_CALLABLE``).

    As django-axes reads it (the credentials, else the posted form), cut to the width of its
    records' column: a ten-thousand-character name was a 500 on PostgreSQL when the failure
    was recorded. Names that long share a budget, which only errs on the side of refusing."""
    field = getattr(settings, "AXES_USERNAME_FORM_FIELD", "username")
    value = (
        credentials.get(field) if credentials else getattr(request, "data", request.POST).get(field)
    )
    return None if value is None else str(value)[:MAX_VALUE]


class _Refused(Exception):
    def __init__(self, key: Key) -> None:
        super().__init__(key)
        self.key = key


def throttle_keys(username: str | None, ip_address: str | None) -> list[Key]:
    """The budgets one attempt draws on, account first (every claim takes the rows in the
    same order, so two claims never wait on each other in a cycle)."""
    keys: list[Key] = []
    for parameter in settings.AXES_LOCKOUT_PARAMETERS:
        if parameter == "username":
            if username:
                # Lower-cased: the same address in other letter cases shares one budget.
                keys.append((SignInThrottle.Kind.USERNAME, username.strip().lower()[:MAX_VALUE]))
        elif parameter == "ip_address":
            if ip_address:
                keys.append((SignInThrottle.Kind.IP_ADDRESS, ip_address[:MAX_VALUE]))
        else:
            raise ImproperlyConfigured(
                "learncredits.web.signin supports AXES_LOCKOUT_PARAMETERS entries "
                f"'username' and 'ip_address' only, not {parameter!r}"
            )
    keys.sort(key=lambda key: key[0] != SignInThrottle.Kind.USERNAME)
    return keys


def _window_start(now: datetime, cool_off: timedelta | None) -> datetime | None:
    return None if cool_off is None else now - cool_off


def claim(keys: list[Key], *, limit: int, cool_off: timedelta | None) -> Key | None:
    """Claim one attempt from every budget, all or none. Returns None when claimed, or the
    key whose budget is spent.

    The rows are created first (the unique constraint makes concurrent creators agree on one
    row); then, in one transaction, each budget is taken by ``UPDATE ... SET failures =
    failures + 1 WHERE ... AND failures < limit``. PostgreSQL re-checks the condition on the
    latest row version when two updates meet, and SQLite runs one writer at a time, so no
    two attempts can both take the last slot.
    """
    now = timezone.now()
    for kind, value in keys:
        SignInThrottle.objects.get_or_create(
            kind=kind, value=value, defaults={"last_attempt_at": now}
        )
    start = _window_start(now, cool_off)
    available = Q(failures__lt=limit)
    failures: Any = F("failures") + 1
    if start is not None:  # a budget whose window has ended starts again at this attempt
        available |= Q(last_attempt_at__lt=start)
        failures = Case(When(last_attempt_at__lt=start, then=Value(1)), default=failures)
    try:
        with transaction.atomic():
            for key in keys:
                taken = (
                    SignInThrottle.objects.filter(kind=key[0], value=key[1])
                    .filter(available)
                    .update(failures=failures, last_attempt_at=now)
                )
                if not taken:
                    raise _Refused(key)  # rolls back the slots taken before it
    except _Refused as refused:
        return refused.key
    return None


def touch(keys: list[Key]) -> None:
    """A refused attempt restarts the cool-off of the budgets that are spent, as django-axes
    does with ``AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT`` (its default)."""
    for kind, value in keys:
        SignInThrottle.objects.filter(kind=kind, value=value).update(last_attempt_at=timezone.now())


def give_back(keys: list[Key]) -> None:
    """A successful attempt was not a failure: its slots return to the budgets."""
    for kind, value in keys:
        SignInThrottle.objects.filter(kind=kind, value=value, failures__gt=0).update(
            failures=F("failures") - 1
        )


def failures(keys: list[Key], *, cool_off: timedelta | None) -> int:
    """The most-spent budget among ``keys`` (0 when its window has ended)."""
    if not keys:
        return 0
    query = Q()
    for kind, value in keys:
        query |= Q(kind=kind, value=value)
    rows = SignInThrottle.objects.filter(query)
    start = _window_start(timezone.now(), cool_off)
    if start is not None:
        rows = rows.filter(last_attempt_at__gte=start)
    return max(rows.values_list("failures", flat=True), default=0)


def _request_keys(request: HttpRequest, credentials: dict[str, Any] | None) -> list[Key]:
    username = get_client_username(request, credentials)
    return throttle_keys(username, getattr(request, "axes_ip_address", None))


class ThrottledSignInBackend(AxesStandaloneBackend):
    """First in ``AUTHENTICATION_BACKENDS``: claims the attempt before ModelBackend checks
    the password, and refuses it (django-axes' refusal, so its locked-out page answers)
    when a budget is spent."""

    @toggleable
    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            raise AxesBackendRequestParameterRequired(
                "ThrottledSignInBackend needs the request to know the address"
            )
        credentials = get_credentials(username=username, password=password, **kwargs)
        AxesProxyHandler.update_request(request)
        handler = AxesProxyHandler.get_implementation()
        if handler.is_whitelisted(request, credentials):
            return None
        keys = _request_keys(request, credentials)
        spent: Key | None = (
            ("blacklist", "") if handler.is_blacklisted(request, credentials) else None
        )
        if spent is None:
            spent = claim(
                keys,
                limit=get_failure_limit(request, credentials),
                cool_off=get_cool_off(request),
            )
        if spent is None:
            setattr(request, CLAIMED, keys)
            return None  # the next backend checks the password

        if axes_settings.AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT:
            touch([key for key in keys if key == spent])
        response_context = kwargs.get("response_context", {})
        response_context["error"] = get_lockout_message()
        request.axes_locked_out = True  # type: ignore[attr-defined]
        raise AxesBackendPermissionDenied("the sign-in budget of this account or address is spent")


class ThrottledSignInHandler(AxesDatabaseHandler):
    """django-axes' database handler (records, logs, resets) whose lock decision reads the
    claimed budgets, so that the answer to the failure that spends the last slot is the
    locked-out page, as before."""

    def get_failures(self, request: Any, credentials: dict[str, Any] | None = None) -> int:
        return failures(_request_keys(request, credentials), cool_off=get_cool_off(request))

    def user_logged_in(self, sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
        claimed = getattr(request, CLAIMED, None)
        if claimed:
            give_back(claimed)
            setattr(request, CLAIMED, None)
        super().user_logged_in(sender, request, user, **kwargs)

    def reset_user_attempts(self, request: Any, credentials: dict[str, Any] | None = None) -> int:
        """On success (``AXES_RESET_ON_SUCCESS``) the account's budget starts again. The
        address keeps its other failures: one's own sign-in must not wipe the failures the
        same address spent guessing other accounts."""
        count = super().reset_user_attempts(request, credentials)
        keys = _request_keys(request, credentials)
        SignInThrottle.objects.filter(
            kind=SignInThrottle.Kind.USERNAME,
            value__in=[value for kind, value in keys if kind == SignInThrottle.Kind.USERNAME],
        ).update(failures=0)
        return int(count)

    def reset_attempts(
        self,
        *,
        ip_address: str | None = None,
        username: str | None = None,
        ip_or_username: bool = False,
    ) -> int:
        """``axes_reset``, ``axes_reset_ip`` and ``axes_reset_username`` unlock here too."""
        count = super().reset_attempts(
            ip_address=ip_address, username=username, ip_or_username=ip_or_username
        )
        budgets = SignInThrottle.objects.all()
        by_ip = Q(kind=SignInThrottle.Kind.IP_ADDRESS, value=ip_address)
        by_user = Q(kind=SignInThrottle.Kind.USERNAME, value=(username or "").strip().lower())
        if ip_address and username:
            budgets = budgets.filter(by_ip | by_user)
        elif ip_address:
            budgets = budgets.filter(by_ip)
        elif username:
            budgets = budgets.filter(by_user)
        budgets.delete()
        return int(count)
