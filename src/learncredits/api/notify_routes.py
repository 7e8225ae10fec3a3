"""Alerts, webhooks and auto top-up endpoints of the v1 API."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Status

from learncredits.api import schemas as s
from learncredits.api.auth import caller, decode_or_404, org_for
from learncredits.api.common import ListParams, paginate, responses
from learncredits.billing import auto_top_up
from learncredits.billing.models import AutoTopUp
from learncredits.credits.models import Alert
from learncredits.domain.errors import NotFound
from learncredits.notify import webhooks
from learncredits.notify.models import WebhookDelivery, WebhookEndpoint

router = Router()


@router.get("/orgs/{org_id}/alerts", response=responses(200, s.AlertPage), tags=["alerts"])
def list_alerts(request: HttpRequest, org_id: str, params: Query[ListParams]) -> s.Page:
    org = org_for(request, org_id)
    return paginate(Alert.objects.filter(org=org), params)


@router.post(
    "/orgs/{org_id}/webhooks", response=responses(201, s.WebhookCreatedOut), tags=["webhooks"]
)
def create_webhook(request: HttpRequest, org_id: str, body: s.WebhookIn) -> Status[Any]:
    org = org_for(request, org_id)
    endpoint = webhooks.create_endpoint(
        org, url=body.url, events=body.events, actor=caller(request).label
    )
    return Status(201, endpoint)


@router.get("/orgs/{org_id}/webhooks", response=responses(200, s.WebhookPage), tags=["webhooks"])
def list_webhooks(request: HttpRequest, org_id: str, params: Query[ListParams]) -> s.Page:
    org = org_for(request, org_id)
    live = WebhookEndpoint.objects.filter(org=org, deleted_at__isnull=True)
    return paginate(live, params)


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


@router.get(
    "/orgs/{org_id}/webhooks/{webhook_id}/deliveries",
    response=responses(200, s.WebhookDeliveryPage),
    tags=["webhooks"],
)
def list_deliveries(
    request: HttpRequest, org_id: str, webhook_id: str, params: Query[ListParams]
) -> s.Page:
    org = org_for(request, org_id)
    endpoint = webhooks.get_endpoint(org, decode_or_404("webhook", webhook_id, "webhook"))
    return paginate(WebhookDelivery.objects.filter(endpoint=endpoint), params)


@router.get(
    "/orgs/{org_id}/auto-top-up", response=responses(200, s.AutoTopUpOut), tags=["purchases"]
)
def get_auto_top_up(request: HttpRequest, org_id: str) -> AutoTopUp:
    org = org_for(request, org_id)
    rule = AutoTopUp.objects.filter(org=org).first()
    if rule is None:
        raise NotFound("no auto top-up rule is set")
    return rule


@router.put(
    "/orgs/{org_id}/auto-top-up", response=responses(200, s.AutoTopUpOut), tags=["purchases"]
)
def put_auto_top_up(request: HttpRequest, org_id: str, body: s.AutoTopUpIn) -> AutoTopUp:
    """Set the org's auto top-up rule: below ``below_available``, buy ``quantity`` credits (or
    enough to reach ``target_available``), within the monthly limits."""
    org = org_for(request, org_id)
    return auto_top_up.configure(
        org, auto_top_up.RuleIn(**body.model_dump()), actor=caller(request).label
    )
