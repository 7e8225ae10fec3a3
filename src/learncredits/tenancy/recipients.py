"""Who receives the org's alert emails (docs/product.md section 9, "Who is emailed").

Until someone chooses, the emails go where they always went: the billing email and every
owner and admin (the release warning: owners and admins only). An owner or admin may choose
instead, on Settings > Billing or through the operator's ``PATCH /orgs/{id}``: whether the
billing email gets them, which of the org's owners and admins do, and up to
``MAX_EXTRA_EMAILS`` other addresses. The choice is kept on the org
(``Organization.alert_recipients``) and is the one source notify/emails.py reads.

A chosen person who stops being an owner or admin (or leaves) simply stops receiving them;
should the choice name nobody who can still receive anything, the defaults apply again,
so an alert is never sent to no one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email

from learncredits.domain.errors import InvalidRecipients
from learncredits.tenancy.models import Membership, Organization

MAX_EXTRA_EMAILS = 10
# Refused before any address is looked at, so a pasted list cannot make us validate
# thousands of them to say "too many".
_MAX_TYPED = 100
_ALERT_ROLES = (Membership.Role.OWNER, Membership.Role.ADMIN)
_FIELDS = frozenset({"billing_email", "user_ids", "emails"})


@dataclass(frozen=True)
class Choice:
    """The org's choice as the page shows it (the defaults when nobody chose)."""

    chosen: bool
    billing_email: bool
    user_ids: frozenset[int]
    emails: tuple[str, ...]


def split_addresses(typed: str) -> list[str]:
    """Addresses typed in one box, separated by commas, semicolons, blanks or lines."""
    return [part for part in re.split(r"[\s,;]+", typed) if part]


def _people(org: Organization) -> dict[int, str]:
    """The org's owners and admins who may receive alerts: user id -> email."""
    return dict(
        Membership.objects.filter(org=org, role__in=_ALERT_ROLES)
        .order_by("user_id")
        .values_list("user_id", "user__email")
    )


def _clean_emails(value: object) -> list[str]:
    if not isinstance(value, list | tuple):
        raise InvalidRecipients("emails must be a list of addresses", field="emails")
    if len(value) > _MAX_TYPED:
        raise InvalidRecipients(
            f"at most {MAX_EXTRA_EMAILS} extra addresses may receive alerts", field="emails"
        )
    cleaned: list[str] = []
    for raw in value:
        if not isinstance(raw, str):
            raise InvalidRecipients("each extra address must be a string", field="emails")
        email = raw.strip().lower()
        if not email:
            continue
        try:
            validate_email(email)
        except DjangoValidationError:
            raise InvalidRecipients(
                f"{raw.strip()!r} is not a valid email address", field="emails"
            ) from None
        if email not in cleaned:
            cleaned.append(email)
    if len(cleaned) > MAX_EXTRA_EMAILS:
        raise InvalidRecipients(
            f"at most {MAX_EXTRA_EMAILS} extra addresses may receive alerts ({len(cleaned)} given)",
            field="emails",
        )
    return cleaned


def _clean_user_ids(org: Organization, value: object) -> list[int]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise InvalidRecipients("user_ids must be a list of user ids", field="user_ids")
    people = _people(org)
    unknown = [v for v in value if v not in people]
    if unknown:
        # Another org's user, a removed one or a member of another role: all the same answer.
        raise InvalidRecipients(
            "only the organization's owners and admins can be chosen to receive alerts",
            field="user_ids",
        )
    return sorted(set(value))


def clean_alert_recipients(org: Organization, value: object) -> dict[str, object] | None:
    """The one rule for a choice of recipients: ``{"billing_email": bool, "user_ids":
    [owner or admin user ids of this org], "emails": [up to 10 addresses]}``, stored with
    addresses lower-cased and de-duplicated; None goes back to the defaults. Refused with
    ``invalid_recipients`` (422), saying why: a bad address, too many, someone who is not
    an owner or admin here, or no recipient at all."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidRecipients("alert_recipients must be an object, or null for the defaults")
    unknown = sorted(set(map(str, value)) - _FIELDS)
    if unknown:
        raise InvalidRecipients(f"alert_recipients has unknown fields: {', '.join(unknown)}")
    billing_email = value.get("billing_email", False)
    if not isinstance(billing_email, bool):
        raise InvalidRecipients("billing_email must be true or false", field="billing_email")
    emails = _clean_emails(value.get("emails", []))
    user_ids = _clean_user_ids(org, value.get("user_ids", []))
    if not (billing_email or user_ids or emails):
        raise InvalidRecipients(
            "choose at least one recipient: the billing email, an owner or admin, or an address"
        )
    # Addresses already received through the billing email or a chosen person add nothing.
    people = _people(org)
    known = {org.billing_email.lower()} if billing_email else set()
    known |= {people[u].lower() for u in user_ids if people[u]}
    return {
        "billing_email": billing_email,
        "user_ids": user_ids,
        "emails": [e for e in emails if e not in known],
    }


def choice_of(org: Organization) -> Choice:
    """The org's choice, or what the defaults amount to (billing email and every owner and
    admin), for the page's checkboxes."""
    stored = org.alert_recipients
    if not isinstance(stored, Mapping):
        return Choice(False, True, frozenset(_people(org)), ())
    return Choice(
        True,
        bool(stored.get("billing_email")),
        frozenset(int(u) for u in stored.get("user_ids") or ()),
        tuple(str(e) for e in stored.get("emails") or ()),
    )


def chosen_emails(org: Organization) -> list[str] | None:
    """The addresses the org chose, in a stable order without repeats; None when nobody
    chose, or when nobody chosen can still receive them (then the defaults apply)."""
    choice = choice_of(org)
    if not choice.chosen:
        return None
    people = _people(org)
    found: Iterable[str] = [
        *([org.billing_email] if choice.billing_email else []),
        *(people[u] for u in sorted(choice.user_ids) if people.get(u)),
        *choice.emails,
    ]
    emails = list(dict.fromkeys(e.lower() for e in found if e))
    return emails or None


def owners_and_admins(org: Organization) -> list[str]:
    """Every owner's and admin's address: today's default recipients besides the billing
    email."""
    return list(dict.fromkeys(e for e in _people(org).values() if e))
