"""Single sign-on (OpenID Connect) of an org: the operator or the org's key. Every rule lives
in tenancy/sso.py."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from ninja import Router

from learncredits.api import schemas as s
from learncredits.api.auth import caller, org_for
from learncredits.api.common import responses
from learncredits.tenancy import sso
from learncredits.tenancy.models import SsoConfig

router = Router(tags=["single sign-on"])


@router.put("/orgs/{org_id}/sso", response=responses(200, s.SsoOut))
def put_sso(request: HttpRequest, org_id: str, body: s.SsoIn) -> SsoConfig:
    """People whose email is of one of ``email_domains`` then sign in at the provider; with
    ``required``, the password form refuses everyone of the org but its owner. Leave out
    ``client_secret`` to keep the stored one. A domain of another org's sign-on: 409
    ``email_domain_taken``; an issuer that is not an https URL: 422."""
    org = org_for(request, org_id)
    return sso.configure(
        org,
        issuer=body.issuer,
        client_id=body.client_id,
        client_secret=body.client_secret,
        email_domains=body.email_domains,
        required=body.required,
        actor=caller(request).label,
    )


@router.get("/orgs/{org_id}/sso", response=responses(200, s.SsoOut))
def get_sso(request: HttpRequest, org_id: str) -> SsoConfig:
    return sso.get_config(org_for(request, org_id))


@router.delete("/orgs/{org_id}/sso", response=responses(204, None))
def delete_sso(request: HttpRequest, org_id: str) -> HttpResponse:
    """Turn single sign-on off: the domains are freed and passwords work again. Accounts
    made by single sign-on stay (they can get a password through "Forgot your password?")."""
    sso.disable(org_for(request, org_id), actor=caller(request).label)
    return HttpResponse(status=204)
