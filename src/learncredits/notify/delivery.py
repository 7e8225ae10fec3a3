"""The worker's side of the outbox: fan events out, then send emails and webhooks with retries.

Steps, each safe to crash in:

1. ``dispatch_events``: in one transaction, turn undispatched events into ``EmailMessage`` and
   ``WebhookDelivery`` rows (unique per event, so a repeat cannot double them), run the
   reactions registered for internal events (``credits.events.react_to``: queueing an auto
   top-up), and mark the events dispatched.
2. ``send_due_emails`` / ``deliver_due_webhooks``: claim due rows for a lease (a short
   transaction), send outside any transaction, then record the outcome. A worker that dies
   after claiming leaves the row to be taken over when the lease ends; one whose batch runs
   long hands the unsent rest back before the lease ends (``_while_leased``). Webhooks are
   at-least-once with the same ``webhook-id`` on every attempt; an email is re-sent only if
   the worker died in the instant between the SMTP server accepting it and our commit, and
   carries a stable Message-ID so mail systems can drop that duplicate.
"""

from __future__ import annotations

import encodings.idna
import http.client
import ipaddress
import json
import logging
import random
import re
import socket
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from standardwebhooks import Webhook

from learncredits.credits.events import WEBHOOK_EVENT_TYPES, emit, reactions_to
from learncredits.credits.models import Event
from learncredits.notify import emails
from learncredits.notify.models import Delivery, EmailMessage, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)
# A worker stops sending its claimed batch this long before the lease ends and hands the
# rest back: longer than one send may take (a webhook times out after 10 s), so that no row
# is still being sent when its lease runs out and another worker may claim it.
LEASE_MARGIN = timedelta(minutes=1)
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
            for reaction in reactions_to(event.type):
                reaction(event)
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


def _while_leased(rows: list[D]) -> Iterator[D]:
    """The claimed rows, one by one, while their lease has time left; the rest are handed
    back unsent (their lease cleared, no attempt counted) for the next pass of any worker.

    Why: sending is sequential, and a batch of slow endpoints (each answering just inside
    its timeout) can outlast the lease. Another worker would then claim the rows not yet
    sent and both would send them, and record attempts over each other."""
    deadline = time.monotonic() + (LEASE - LEASE_MARGIN).total_seconds()
    for index, row in enumerate(rows):
        if time.monotonic() >= deadline:
            rest = [r.pk for r in rows[index:]]
            type(row).objects.filter(pk__in=rest, status=Delivery.Status.PENDING).update(  # type: ignore[attr-defined]
                claimed_until=None
            )
            logger.warning(
                "%s: %d claimed rows handed back unsent, the lease is ending",
                type(row).__name__,
                len(rest),
            )
            return
        yield row


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
    for message in _while_leased(_claim(EmailMessage.objects.all(), now, limit)):
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
    """A webhook URL refused; the message says why in words fit for the API's caller."""


# The column's width (WebhookEndpoint.url), so a URL that passes the check can be stored.
MAX_URL_LENGTH = 2000
MAX_HOST_LENGTH = 253  # DNS: 255 octets on the wire, 253 characters written out
MAX_LABEL_LENGTH = 63

# How urllib.request splits the URL it connects to: scheme, then "//" and the authority up to
# the first "/", "?" or "#". The check reads the URL the same way, so it judges the very host
# that the delivery connects to.
_URL_SHAPE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", re.ASCII | re.IGNORECASE)
_PORT = re.compile(r"[0-9]{1,5}", re.ASCII)
# A last label like these makes the whole host an IPv4 address to browsers and to the C
# resolver (``127.1``, ``2130706433``, ``0x7f.1``, ``0177.0.0.1``), whatever it looks like.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*", re.ASCII | re.IGNORECASE)
# The IDNA codec (which socket.getaddrinfo applies to a non-ASCII host) splits labels on these.
_IDNA_DOTS = re.compile("[.\u3002\uff0e\uff61]")

# IPv6 ranges that carry an IPv4 address whose owner receives the connection.
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses a connection to this IPv6 address really ends up at (IPv4-mapped,
    IPv4-compatible, NAT64, 6to4, Teredo server and client), or None if it embeds none.

    ``ipaddress`` calls many of these global because the IPv6 range is, while the packets go
    to the IPv4 inside: ``64:ff9b::a9fe:a9fe`` is the cloud metadata service behind NAT64."""
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _IPV4_COMPATIBLE:  # also :: and ::1, whose "IPv4" is 0.0.0.0 and 0.0.0.1
        return [ipaddress.IPv4Address(int(address))]
    if address in _NAT64_WELL_KNOWN:
        return [ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    return None


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may connect to this address: a global unicast address, judged by the
    IPv4 inside for IPv6 forms that embed one.

    Local-use NAT64 (64:ff9b:1::/48) is refused outright: where its IPv4 sits depends on the
    operator's prefix length, so the real destination cannot be known from the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id or address in _NAT64_LOCAL_USE:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return all(is_public_address(ipv4) for ipv4 in inner)
    return address.is_global and not address.is_multicast


def parse_webhook_url(url: str) -> tuple[str, int]:
    """The host (ASCII, without brackets) and port a delivery to ``url`` connects to; raises
    UnsafeUrl naming the problem for any URL that is not a plain http(s) URL.

    Done before any lookup and whatever the settings, because urllib, the IDNA codec and
    getaddrinfo raise assorted ValueErrors on malformed hosts and ports, and because hosts
    that different parsers read differently (numeric IPv4 spellings, full-width digits,
    ideographic dots, credentials, percent-escapes) are where address checks get bypassed."""
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("the URL must be http or https with a host")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL must be at most {MAX_URL_LENGTH} characters long")
    for char in url:
        # Spaces, controls (NUL), format characters, surrogates, unassigned code points:
        # urllib drops some of them silently, so the URL checked would not be the one used.
        if unicodedata.category(char)[0] in "CZ":
            raise UnsafeUrl(
                f"the URL must not contain spaces or control characters (U+{ord(char):04X})"
            )
    shape = _URL_SHAPE.fullmatch(url)
    if shape is None or shape[1].lower() not in ("http", "https"):
        raise UnsafeUrl("the URL must be http or https with a host")
    scheme, authority, rest = shape[1].lower(), shape[2], shape[3]
    if not rest.isascii():
        raise UnsafeUrl("the path and query must be ASCII (percent-encode other characters)")
    if "@" in authority:
        raise UnsafeUrl("the URL must not contain credentials (user:password@)")
    host_text, port_text = _split_authority(authority)
    port = _parse_port(port_text, default=80 if scheme == "http" else 443)
    return _parse_host(host_text), port


def _split_authority(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise UnsafeUrl("an IPv6 host must be closed with ']', like http://[2001:db8::1]/")
        host_text, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise UnsafeUrl("only ':' and a port may follow an IPv6 host in brackets")
        return host_text, (after[1:] if after else None)
    if "[" in authority or "]" in authority:
        raise UnsafeUrl("square brackets are only for an IPv6 host, like http://[2001:db8::1]/")
    host_text, colon, port_text = authority.partition(":")
    if ":" in port_text:
        raise UnsafeUrl("an IPv6 host must be in square brackets, like http://[2001:db8::1]/")
    return host_text, (port_text if colon else None)


def _parse_port(port_text: str | None, *, default: int) -> int:
    if port_text is None:
        return default
    # ASCII digits only: int() would also take "+80", " 80", "8_0" and digits of any script.
    if _PORT.fullmatch(port_text) is None or not 1 <= int(port_text) <= 65535:
        raise UnsafeUrl("the port must be a number from 1 to 65535")
    return int(port_text)


def _parse_host(host_text: str) -> str:
    if not host_text:
        raise UnsafeUrl("the URL must be http or https with a host")
    if host_text.startswith("["):
        literal = host_text[1:-1]
        if "%" in literal:
            raise UnsafeUrl("an IPv6 zone (%) cannot be used in a webhook URL")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise UnsafeUrl("the host in brackets is not a valid IPv6 address") from None
        return literal
    ascii_host = _ascii_host_name(host_text)
    last_label = ascii_host.rstrip(".").rsplit(".", 1)[-1]
    if _NUMERIC_LABEL.fullmatch(last_label):
        try:
            ipaddress.IPv4Address(host_text)
        except ValueError:
            raise UnsafeUrl(
                "an IPv4 host must be four decimal numbers from 0 to 255 without leading zeros,"
                " like 192.0.2.1"
            ) from None
    return ascii_host


def _ascii_host_name(host_text: str) -> str:
    """The host as the resolver will look it up: each label through the IDNA codec that
    socket.getaddrinfo applies, then held to letters, digits and hyphens."""
    labels = _IDNA_DOTS.split(host_text)
    trailing_dot = len(labels) > 1 and labels[-1] == ""
    if trailing_dot:
        labels.pop()
    ascii_labels = []
    for label in labels:
        if not label:
            raise UnsafeUrl("the host is not a valid name: it has an empty label ('..')")
        if label.isascii():
            ascii_label = label
        else:
            try:
                ascii_label = encodings.idna.ToASCII(label).decode("ascii")
            except ValueError as exc:  # UnicodeError: prohibited, unassigned, bidi, too long
                raise UnsafeUrl(f"the host is not a valid internationalised name ({exc})") from None
        if not 1 <= len(ascii_label) <= MAX_LABEL_LENGTH:
            raise UnsafeUrl(
                f"the host is not a valid name: each label must be 1 to {MAX_LABEL_LENGTH}"
                " characters long"
            )
        if _DNS_LABEL.fullmatch(ascii_label) is None:
            raise UnsafeUrl(
                "the host is not a valid name: labels are letters, digits and inner hyphens"
            )
        ascii_labels.append(ascii_label)
    ascii_host = ".".join(ascii_labels)
    if len(ascii_host) > MAX_HOST_LENGTH:
        raise UnsafeUrl(f"the host name must be at most {MAX_HOST_LENGTH} characters long")
    return ascii_host + ("." if trailing_dot else "")


def check_url(url: str) -> None:
    """Refuse URLs that are not plain http(s) (see ``parse_webhook_url``), or whose host
    resolves to an address that is not public (see ``is_public_address``); settings may
    allow non-public addresses, as in tests, but never a malformed URL.

    Raises only UnsafeUrl, so the API answers 422 and the delivery loop records a failure."""
    host, port = parse_webhook_url(url)
    if settings.LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE:
        return
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as exc:
        raise UnsafeUrl(f"the host does not resolve: {exc}") from None
    if not infos:
        raise UnsafeUrl("the host does not resolve")
    for info in infos:
        try:
            address = ipaddress.ip_address(info[4][0])
        except ValueError:
            raise UnsafeUrl(f"the host resolves to an unusable address ({info[4][0]})") from None
        if not is_public_address(address):
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
    for delivery in _while_leased(claimed):
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
            # A refused URL, a network failure or a garbled answer (HTTPException is not an
            # OSError) is a failed attempt of this delivery, never the end of the batch.
            except (UnsafeUrl, OSError, ValueError, http.client.HTTPException) as exc:
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
