"""Webhook endpoints: created with a ``whsec_`` secret shown once, deleted softly; both
audited."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlsplit

from django.db import transaction
from django.utils import timezone

from learncredits.audit import trail as audit
from learncredits.credits.events import WEBHOOK_EVENT_TYPES
from learncredits.domain.errors import NotFound, ValidationFailed
from learncredits.notify.delivery import UnsafeUrl, check_url
from learncredits.notify.models import WebhookEndpoint
from learncredits.tenancy.models import Organization

MAX_ENDPOINTS_PER_ORG = 20


def create_endpoint(
    org: Organization, *, url: str, events: list[str], actor: str = "system"
) -> WebhookEndpoint:
    """A new endpoint, audited: it receives the org's events, so who added it and where it
    points must be on record."""
    unknown = sorted(set(events) - set(WEBHOOK_EVENT_TYPES))
    if unknown:
        raise ValidationFailed(
            f"unknown event types: {', '.join(unknown)}", allowed=list(WEBHOOK_EVENT_TYPES)
        )
    try:
        check_url(url)
    except UnsafeUrl as exc:
        raise ValidationFailed(f"url refused: {exc}") from None
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with transaction.atomic():
        live = WebhookEndpoint.objects.filter(org=org, deleted_at__isnull=True).count()
        if live >= MAX_ENDPOINTS_PER_ORG:
            raise ValidationFailed(f"at most {MAX_ENDPOINTS_PER_ORG} webhook endpoints per org")
        endpoint = WebhookEndpoint.objects.create(
            org=org, url=url, events=sorted(set(events)), secret=secret
        )
        audit.record(
            actor,
            "webhook.create",
            org_id=org.pk,
            target=f"whk_{endpoint.pk}",
            host=_host(url),
            events=endpoint.events,
        )
    return endpoint


def get_endpoint(org: Organization, endpoint_id: int) -> WebhookEndpoint:
    found = WebhookEndpoint.objects.filter(org=org, pk=endpoint_id, deleted_at__isnull=True).first()
    if found is None:
        raise NotFound("webhook endpoint not found")
    return found


def delete_endpoint(org: Organization, endpoint_id: int, *, actor: str = "system") -> None:
    """Stop sending to it; its delivery log stays (deliveries refer to it)."""
    with transaction.atomic():
        endpoint = get_endpoint(org, endpoint_id)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            deleted_at=timezone.now(), active=False
        )
        audit.record(
            actor,
            "webhook.delete",
            org_id=org.pk,
            target=f"whk_{endpoint.pk}",
            host=_host(endpoint.url),
        )


def _host(url: str) -> str:
    """Where an endpoint points, for the audit trail: the host only, since a webhook URL's
    path or query often carries the receiver's own secret token."""
    return urlsplit(url).hostname or ""
