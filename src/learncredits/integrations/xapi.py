"""xAPI statements: an LMS or content player reports progress; we start and complete.

Mapping (docs/api.md): verbs launched, initialized, attempted and progressed start the actor's
open assignment of the activity's content; completed and passed complete it. The actor is
the employee whose email is the statement's ``mbox``; the activity is the content whose
``xapi_activity_id`` is the object's id. Each statement is stored once per id, in the same
transaction as its effect: a replay has no second effect, the same id with a different body
is refused, and statements we cannot map are stored and ignored, never an error that would
make a player retry forever.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from django.db import IntegrityError, transaction

from learncredits.catalog.models import Content
from learncredits.credits import actions
from learncredits.credits.models import Assignment
from learncredits.domain.errors import DomainError, InvalidState, ValidationFailed
from learncredits.integrations.models import XapiStatement
from learncredits.tenancy.models import Employee, Organization

ADL = "http://adlnet.gov/expapi/verbs/"
START_VERBS = {ADL + v for v in ("launched", "initialized", "attempted", "progressed")}
COMPLETE_VERBS = {ADL + v for v in ("completed", "passed")}
ACTOR = "xapi"


def _canonical(statement: dict[str, Any]) -> str:
    body = {k: v for k, v in statement.items() if k not in ("stored", "authority", "version")}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _statement_id(statement: dict[str, Any], given: str | None) -> str:
    in_body = statement.get("id")
    if given is not None and in_body is not None and str(in_body).lower() != given.lower():
        raise ValidationFailed("statementId does not match the statement's id")
    raw = given or in_body or str(uuid.uuid4())
    try:
        return str(uuid.UUID(str(raw)))
    except ValueError:
        raise ValidationFailed(f"statement id {raw!r} is not a UUID") from None


def _validate(statement: object) -> dict[str, Any]:
    if not isinstance(statement, dict):
        raise ValidationFailed("a statement must be a JSON object")
    for field in ("actor", "verb", "object"):
        if not isinstance(statement.get(field), dict):
            raise ValidationFailed(f"a statement needs an {field} object")
    if not isinstance(statement["verb"].get("id"), str):
        raise ValidationFailed("verb.id must be an IRI")
    return statement


def _apply(org: Organization, verb: str, email: str, activity: str) -> str:
    """Start or complete the matching assignment; say what happened (or why nothing did)."""
    if verb not in START_VERBS and verb not in COMPLETE_VERBS:
        return "ignored: verb not mapped"
    employee = Employee.objects.filter(org=org, email=email).first() if email else None
    if employee is None:
        return "ignored: unknown actor"
    content = Content.objects.filter(xapi_activity_id=activity).first() if activity else None
    if content is None:
        return "ignored: unknown activity"
    assignment = (
        Assignment.objects.filter(
            org=org,
            employee=employee,
            content=content,
            status__in=[Assignment.Status.ASSIGNED, Assignment.Status.STARTED],
        )
        .order_by("-pk")
        .first()
    )
    if assignment is None:
        return "ignored: no open assignment"
    try:
        if verb in START_VERBS:
            actions.start_assignment(org, assignment.pk, actor=ACTOR)
            return f"started asg_{assignment.pk}"
        actions.complete_assignment(org, assignment.pk, actor=ACTOR)
        return f"completed asg_{assignment.pk}"
    except DomainError as exc:
        return f"ignored: {exc.detail}"[:200]


def receive(org: Organization, statement: object, statement_id: str | None = None) -> str:
    """Store one statement once and apply it; returns its id."""
    body = _validate(statement)
    sid = _statement_id(body, statement_id)
    body = {**body, "id": sid}
    digest = _canonical(body)
    mbox = body["actor"].get("mbox")
    email = (
        mbox[len("mailto:") :].strip().lower()
        if isinstance(mbox, str) and mbox.startswith("mailto:")
        else ""
    )
    activity = body["object"].get("id") if isinstance(body["object"].get("id"), str) else ""
    verb = body["verb"]["id"]
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = XapiStatement.objects.create(
                    org=org,
                    statement_id=sid,
                    body_hash=digest,
                    body=body,
                    verb=verb[:500],
                    actor_email=email[:254],
                    activity_id=activity[:2000],
                    outcome="received",
                )
        except IntegrityError:
            existing = XapiStatement.objects.get(org=org, statement_id=sid)
            if existing.body_hash != digest:
                raise InvalidState(
                    f"statement {sid} was already received with a different body"
                ) from None
            return sid
        record.outcome = _apply(org, verb, email, activity)
        record.save(update_fields=["outcome"])
    return sid


def receive_many(org: Organization, payload: object) -> list[str]:
    """POST: one statement or a list, all or nothing (a refused one refuses the batch)."""
    statements = payload if isinstance(payload, list) else [payload]
    if not 1 <= len(statements) <= 500:
        raise ValidationFailed("send 1 to 500 statements at a time")
    with transaction.atomic():
        return [receive(org, statement) for statement in statements]
