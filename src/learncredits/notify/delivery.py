"""The worker's side of the outbox: fan events out, then send emails and webhooks with retries.

Steps, each safe to crash in:

1. ``dispatch_events``: in one transaction, turn undispatched events into ``EmailMessage`` and
   ``WebhookDelivery`` rows (unique per event, so a repeat cannot double them) and mark the
   events dispatched.
2. ``send_due_emails`` / ``deliver_due_webhooks``: claim due rows for a lease (a short
   transaction), send outside any transaction, then record the outcome. A worker that dies
   after claiming leaves the row to be taken over when the lease ends. Webhooks are
   at-least-once with the same ``webhook-id`` on every attempt; an email is re-sent only if
   the worker died in the instant between the SMTP server accepting it and our commit, and
   carries a stable Message-ID so mail systems can drop that duplicate.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from standardwebhooks import Webhook

from learncredits.notify import emails
from learncredits.notify.events import WEBHOOK_EVENT_TYPES, emit
from learncredits.notify.models import (
    Delivery,
    EmailMessage,
    Event,
    WebhookDelivery,
    WebhookEndpoint,
)

logger = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)
D = TypeVar("D", bound=Delivery)


# --- 1. fan-out ------------------------------------------------------------------------------


def dispatch_events(limit: int = 500) -> int:
    """Turn up to ``limit`` undispatched events into deliveries; returns how many."""
    with transaction.atomic():
        queryset = Event.objects.filter(dispatched_at__isnull=True).order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            queryset = queryset.select_for_update(skip_locked=True)
        events = list(queryset.select_related("org")[:limit])
        if not events:
            return 0
        endpoints: dict[int, list[WebhookEndpoint]] = {}
        for endpoint in WebhookEndpoint.objects.filter(
            org_id__in={e.org_id for e in events}, active=True, deleted_at__isnull=True
        ):
            endpoints.setdefault(endpoint.org_id, []).append(endpoint)
        webhooks: list[WebhookDelivery] = []
        mails: list[EmailMessage] = []
        for event in events:
            if event.type in WEBHOOK_EVENT_TYPES:
                webhooks.extend(
                    WebhookDelivery(
                        org_id=event.org_id, endpoint=endpoint, event=event, event_type=event.type
                    )
                    for endpoint in endpoints.get(event.org_id, [])
                    if not endpoint.events or event.type in endpoint.events
                )
            message = emails.compose(event)
            if message is not None:
                mails.append(message)
        WebhookDelivery.objects.bulk_create(webhooks, ignore_conflicts=True)
        EmailMessage.objects.bulk_create(mails, ignore_conflicts=True)
        Event.objects.filter(pk__in=[e.pk for e in events]).update(dispatched_at=timezone.now())
    return len(events)


# --- 2. claiming, and recording outcomes --------------------------------------------------------


def _claim(queryset: QuerySet[D], now: datetime, limit: int) -> list[D]:
    """Take due rows for a lease, so that two workers never send the same one at once."""
    with transaction.atomic():
        due = (
            queryset.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("next_attempt_at", "pk")
        )
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        rows = list(due[:limit])
        if rows:
            queryset.model.objects.filter(pk__in=[r.pk for r in rows]).update(  # type: ignore[attr-defined]
                claimed_until=now + LEASE
            )
    return rows


def _backoff(attempts: int, schedule: Sequence[float]) -> timedelta:
    """The delay before the next attempt: the schedule's step, with +-20% jitter."""
    base = schedule[min(attempts - 1, len(schedule) - 1)]
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def _record(
    row: Delivery, now: datetime, error: str | None, schedule: Sequence[float], **extra: Any
) -> None:
    row.attempts += 1
    row.claimed_until = None
    if error is None:
        row.status = Delivery.Status.SUCCEEDED
        row.delivered_at = now
        row.last_error = ""
    else:
        row.last_error = error[:500]
        if row.attempts > len(schedule):
            row.status = Delivery.Status.FAILED
        else:
            row.next_attempt_at = now + _backoff(row.attempts, schedule)
    for field, value in extra.items():
        setattr(row, field, value)
    row.save(
        update_fields=[
            "attempts",
            "claimed_until",
            "status",
            "delivered_at",
            "last_error",
            "next_attempt_at",
            *extra,
        ]
    )


# --- 3. email -------------------------------------------------------------------------------------


def send_due_emails(now: datetime | None = None, limit: int = 50) -> int:
    now = now or timezone.now()
    schedule = list(settings.LEARNCREDITS_EMAIL_RETRY_SECONDS)
    sent = 0
    for message in _claim(EmailMessage.objects.all(), now, limit):
        error = None
        try:
            mail = EmailMultiAlternatives(
                subject=message.subject,
                body=message.text,
                from_email=settings.DEFAULT_FROM_EMAIL,
                to=list(message.recipients),
                headers={"Message-ID": f"<email-{message.pk}@learncredits>"},
            )
            mail.attach_alternative(message.html, "text/html")
            mail.send(fail_silently=False)
            sent += 1
        except Exception as exc:  # SMTP down, refused, timed out: retry later
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("email %s not sent: %s", message.pk, error)
        with transaction.atomic():
            _record(message, now, error, schedule)
    return sent


# --- 4. webhooks ---------------------------------------------------------------------------------


class UnsafeUrl(ValueError):
    pass


def check_url(url: str) -> None:
    """Refuse URLs that are not http(s), or whose host resolves to a private, loopback,
    link-local or otherwise internal address (unless settings allow it, as in tests)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("the URL must be http or https with a host")
    if settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise UnsafeUrl(f"the host does not resolve: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise UnsafeUrl(f"the host resolves to a non-public address ({address})")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is the receiver's answer, not somewhere to go: following it would carry the
    delivery past the address check (to an internal host) and turn the POST into a GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with _opener.open(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx
        return int(exc.code)


def webhook_body(event: Event) -> str:
    return json.dumps(
        {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.data},
        separators=(",", ":"),
    )


def deliver_due_webhooks(
    now: datetime | None = None,
    limit: int = 50,
    post: Callable[[str, bytes, dict[str, str], float], int] = _post,
) -> int:
    now = now or timezone.now()
    schedule = list(settings.LEARNCREDITS_WEBHOOK_RETRY_SECONDS)
    delivered = 0
    claimed = _claim(WebhookDelivery.objects.select_related("endpoint", "event"), now, limit)
    for delivery in claimed:
        endpoint = delivery.endpoint
        status: int | None = None
        if not endpoint.active or endpoint.deleted_at is not None:
            # Give up without counting an attempt that was never made; the log keeps the
            # attempts really made and their last status code.
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                status=Delivery.Status.FAILED,
                claimed_until=None,
                last_error="endpoint disabled or deleted",
            )
            continue
        else:
            body = webhook_body(delivery.event)
            headers = {
                "content-type": "application/json",
                "user-agent": "learncredits-webhooks/1",
                "webhook-id": delivery.webhook_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(endpoint.secret).sign(delivery.webhook_id, now, body),
            }
            try:
                check_url(endpoint.url)
                status = post(
                    endpoint.url,
                    body.encode(),
                    headers,
                    settings.LEARNCREDITS_WEBHOOK_TIMEOUT_SECONDS,
                )
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except (UnsafeUrl, OSError, ValueError) as exc:
                error = f"{type(exc).__name__}: {exc}"
        with transaction.atomic():
            _record(delivery, now, error, schedule, last_status_code=status)
            _endpoint_outcome(endpoint, ok=error is None)
        delivered += int(error is None)
    return delivered


def _endpoint_outcome(endpoint: WebhookEndpoint, *, ok: bool) -> None:
    """Count consecutive failures; disable the endpoint (and tell its owner) past the limit."""
    if ok:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0)
        return
    endpoint.refresh_from_db(fields=["consecutive_failures", "active"])
    failures = endpoint.consecutive_failures + 1
    disable = endpoint.active and failures >= settings.LEARNCREDITS_WEBHOOK_DISABLE_AFTER
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        consecutive_failures=failures,
        **({"active": False, "disabled_at": timezone.now()} if disable else {}),
    )
    if disable:
        emit(
            endpoint.org_id,
            "webhook.endpoint_disabled",
            {"url": endpoint.url, "consecutive_failures": failures},
        )


def run_once(now: datetime | None = None) -> dict[str, int]:
    """One pass of the outbox: what the worker loop does every second."""
    return {
        "dispatched": dispatch_events(),
        "emails_sent": send_due_emails(now),
        "webhooks_delivered": deliver_due_webhooks(now),
    }
