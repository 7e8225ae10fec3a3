"""SCIM tokens: the credential an org's identity provider provisions with (/scim/v2/).

A token names its org, so the SCIM endpoints need no org in the path. It is not an API key:
each kind of credential is looked up in its own table, so an API key (or the operator's
token) is refused at /scim/v2/ and a SCIM token reaches nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.domain.errors import NotFound, ValidationFailed
from learncredits.tenancy.models import Organization, ScimToken

TOKEN_HEAD = "scim"


@dataclass(frozen=True)
class ScimCaller:
    """Who is provisioning: one token of one org; ``actor`` is written in the audit and
    the ledger (``scim:token_<id>``)."""

    org: Organization
    token_id: int

    @property
    def actor(self) -> str:
        return f"scim:token_{self.token_id}"


def _hash_secret(secret: str) -> str:
    # 256 random bits: a fast hash is enough (as for API keys).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_scim_token(org: Organization, *, name: str, actor: str) -> tuple[ScimToken, str]:
    """A new token for the org; returns the row and the token, which is never stored."""
    name = name.strip()
    if not name:
        raise ValidationFailed("name must not be empty", field="name")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ScimToken.objects.create(
            org=org, name=name, prefix=prefix, secret_hash=_hash_secret(secret)
        )
        audit.record(
            actor,
            "scim_token.create",
            org_id=org.pk,
            target=f"stk_{token.pk}",
            name=name,
            prefix=prefix,
        )
    return token, f"{TOKEN_HEAD}_{org.pk}_{prefix}_{secret}"


def revoke_scim_token(org: Organization, token_id: int, *, actor: str) -> ScimToken:
    """The token stops working at once; the row stays for the audit trail. Revoking twice
    is harmless."""
    with transaction.atomic():
        token = ScimToken.objects.select_for_update().filter(org=org, pk=token_id).first()
        if token is None:
            raise NotFound("SCIM token not found")
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            audit.record(actor, "scim_token.revoke", org_id=org.pk, target=f"stk_{token.pk}")
    return token


def authenticate_scim_token(token: str) -> ScimCaller | None:
    """The org and token a bearer token stands for, or None (unknown, revoked, malformed,
    or another kind of credential)."""
    head, _, rest = token.partition("_")
    org_part, _, rest = rest.partition("_")
    prefix, _, secret = rest.partition("_")
    org_id = ids.whole_number(org_part)
    if head != TOKEN_HEAD or org_id is None or not prefix or not secret or len(prefix) > 16:
        return None
    row = (
        ScimToken.objects.select_related("org")
        .filter(org_id=org_id, prefix=prefix, revoked_at__isnull=True)
        .first()
    )
    if row is None or not hmac.compare_digest(row.secret_hash, _hash_secret(secret)):
        return None
    return ScimCaller(org=row.org, token_id=row.pk)
