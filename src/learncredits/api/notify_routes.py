"""Alerts, webhooks and auto top-up endpoints of the v1 API."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Status

from learncredits import ids
from learncredits.api import schemas as s
from learncredits.api.auth import caller, decode_or_404, org_for
from learncredits.api.common import ListParams, paginate, responses
from learncredits.api.serializers import iso
from learncredits.billing import auto_top_up
from learncredits.billing.models import AutoTopUp
from learncredits.credits.models import Alert
from learncredits.domain.errors import NotFound
from learncredits.notify import webhooks
from learncredits.notify.models import WebhookDelivery, WebhookEndpoint

router = Router()


def _alert(a: Alert) -> dict[str, Any]:
    return {
        "id": ids.encode("alert", a.pk),
        "kind": a.kind,
        "active": a.active,
        "period": a.period or None,
        "created_at": iso(a.created_at),
        "resolved_at": iso(a.resolved_at),
    }


@router.get("/orgs/{org_id}/alerts", response=responses(200, s.AlertPage), tags=["alerts"])
def list_alerts(request: HttpRequest, org_id: str, params: Query[ListParams]) -> Any:
    org = org_for(request, org_id)
    return paginate(Alert.objects.filter(org=org), params, _alert)


def _endpoint(e: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": ids.encode("webhook", e.pk),
        "url": e.url,
        "events": e.events,
        "active": e.active,
        "created_at": iso(e.created_at),
    }


@router.post(
    "/orgs/{org_id}/webhooks", response=responses(201, s.WebhookCreatedOut), tags=["webhooks"]
)
def create_webhook(request: HttpRequest, org_id: str, body: s.WebhookIn) -> Status[Any]:
    org = org_for(request, org_id)
    endpoint = webhooks.create_endpoint(
        org, url=body.url, events=body.events, actor=caller(request).label
    )
    return Status(
        201,
        {
            "id": ids.encode("webhook", endpoint.pk),
            "url": endpoint.url,
            "events": endpoint.events,
            "secret": endpoint.secret,
        },
    )


@router.get("/orgs/{org_id}/webhooks", response=responses(200, s.WebhookPage), tags=["webhooks"])
def list_webhooks(request: HttpRequest, org_id: str, params: Query[ListParams]) -> Any:
    org = org_for(request, org_id)
    live = WebhookEndpoint.objects.filter(org=org, deleted_at__isnull=True)
    return paginate(live, params, _endpoint)


@router.delete(
    "/orgs/{org_id}/webhooks/{webhook_id}", response=responses(204, None), tags=["webhooks"]
)
def delete_webhook(request: HttpRequest, org_id: str, webhook_id: str) -> HttpResponse:
    org = org_for(request, org_id)
    webhooks.delete_endpoint(
        org,
        decode_or_404("webhook", webhook_id, "webhook endpoint"),
        actor=caller(request).label,
    )
    return HttpResponse(status=204)


def _delivery(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": f"dlv_{d.pk}",
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "created_at": iso(d.created_at),
    }


@router.get(
    "/orgs/{org_id}/webhooks/{webhook_id}/deliveries",
    response=responses(200, s.WebhookDeliveryPage),
    tags=["webhooks"],
)
def list_deliveries(
    request: HttpRequest, org_id: str, webhook_id: str, params: Query[ListParams]
) -> Any:
    org = org_for(request, org_id)
    endpoint = webhooks.get_endpoint(org, decode_or_404("webhook", webhook_id, "webhook"))
    return paginate(WebhookDelivery.objects.filter(endpoint=endpoint), params, _delivery)


def _rule(rule: AutoTopUp) -> dict[str, Any]:
    return {
        "enabled": rule.enabled,
        "below_available": rule.below_available,
        "quantity": rule.quantity,
        "target_available": rule.target_available,
        "max_purchases_per_month": rule.max_purchases_per_month,
        "max_credits_per_month": rule.max_credits_per_month,
        "disabled_reason": rule.disabled_reason,
    }


@router.get(
    "/orgs/{org_id}/auto-top-up", response=responses(200, s.AutoTopUpOut), tags=["purchases"]
)
def get_auto_top_up(request: HttpRequest, org_id: str) -> Any:
    org = org_for(request, org_id)
    rule = AutoTopUp.objects.filter(org=org).first()
    if rule is None:
        raise NotFound("no auto top-up rule is set")
    return _rule(rule)


@router.put(
    "/orgs/{org_id}/auto-top-up", response=responses(200, s.AutoTopUpOut), tags=["purchases"]
)
def put_auto_top_up(request: HttpRequest, org_id: str, body: s.AutoTopUpIn) -> Any:
    """Set the org's auto top-up rule: below ``below_available``, buy ``quantity`` credits (or
    enough to reach ``target_available``), within the monthly limits."""
    org = org_for(request, org_id)
    rule = auto_top_up.configure(
        org, auto_top_up.RuleIn(**body.model_dump()), actor=caller(request).label
    )
    return _rule(rule)
