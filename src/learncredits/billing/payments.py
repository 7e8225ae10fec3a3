"""Payment providers: how a purchase is paid before its credits are added.

``TestProvider`` is the built-in provider for development, demos and tests. It approves
every charge except for organizations whose billing email's local part contains
``+decline`` (for example ``billing+decline@example.com``): those are declined, so the
failure path can be exercised end to end without a real card network.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

DECLINE_TRIGGER = "+decline"


@dataclass(frozen=True)
class ChargeRequest:
    org_id: int
    billing_email: str
    amount_cents: int
    currency: str
    description: str
    # Stable per purchase: a provider that sees it twice must charge once.
    idempotency_key: str


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    reference: str = ""
    failure_reason: str = ""


class PaymentProvider(Protocol):
    name: str

    def charge(self, request: ChargeRequest) -> ChargeResult: ...


class TestProvider:
    """Approves charges, except for billing emails carrying the ``+decline`` trigger."""

    name = "test"

    def charge(self, request: ChargeRequest) -> ChargeResult:
        local_part = request.billing_email.partition("@")[0].lower()
        if DECLINE_TRIGGER in local_part:
            return ChargeResult(approved=False, failure_reason="card declined (test trigger)")
        return ChargeResult(approved=True, reference=f"test_{uuid.uuid4().hex}")


_PROVIDERS: dict[str, type] = {"test": TestProvider}


def get_provider(name: str | None = None) -> PaymentProvider:
    provider_cls = _PROVIDERS[name or settings.LEARNCREDITS_PAYMENT_PROVIDER]
    provider: PaymentProvider = provider_cls()
    return provider
