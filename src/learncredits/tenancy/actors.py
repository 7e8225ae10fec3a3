"""Who an audit or ledger actor string stands for, in words a customer recognises.

Writes record their actor as a stable string (``user:usr_7``, ``api_key:key_3``,
``scim:token_2``, ``operator``, ``system:aging``), which is right for the records and
useless to a person reading their ledger. This names them for display, reading only the
org's own users, keys and tokens: an actor of another org, or one since deleted, keeps its
string.
"""

from __future__ import annotations

from collections.abc import Iterable

from learncredits import ids
from learncredits.tenancy.models import ApiKey, Membership, Organization, ScimToken

_FIXED = {
    "operator": "Operator",
    "system": "System",
    "system:aging": "System (unstarted reservations released)",
}


def _pk(actor: str, head: str, kind: str | None) -> int | None:
    """The row id in ``actor`` after ``head``: a public id of ``kind``, or a bare number."""
    if not actor.startswith(head):
        return None
    rest = actor.removeprefix(head)
    if kind is None:
        return int(rest) if rest.isascii() and rest.isdigit() and len(rest) < 19 else None
    return ids.decode(kind, rest)


def actor_names(org: Organization, actors: Iterable[str]) -> dict[str, str]:
    """A display name for each actor string (the string itself when nothing better is known);
    three queries at most, whatever the number of actors."""
    actors = set(actors)
    names = {actor: _FIXED.get(actor, actor) for actor in actors}
    users = {a: pk for a in actors if (pk := _pk(a, "user:", "user")) is not None}
    keys = {a: pk for a in actors if (pk := _pk(a, "api_key:", "api_key")) is not None}
    tokens = {a: pk for a in actors if (pk := _pk(a, "scim:token_", None)) is not None}
    if users:
        found = {
            m.user_id: m.user
            for m in Membership.objects.filter(org=org, user_id__in=users.values()).select_related(
                "user"
            )
        }
        for actor, pk in users.items():
            if (user := found.get(pk)) is not None:
                names[actor] = user.get_full_name() or user.email
    if keys:
        key_names = dict(
            ApiKey.objects.filter(org=org, pk__in=keys.values()).values_list("pk", "name")
        )
        for actor, pk in keys.items():
            if pk in key_names:
                names[actor] = f"API key {key_names[pk]}"
    if tokens:
        token_names = dict(
            ScimToken.objects.filter(org=org, pk__in=tokens.values()).values_list("pk", "name")
        )
        for actor, pk in tokens.items():
            if pk in token_names:
                names[actor] = f"Identity provider ({token_names[pk]})"
    return names
