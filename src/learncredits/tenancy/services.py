"""Organizations, employees, API keys and sign-in accounts: creation and authentication."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from learncredits import ids
from learncredits.audit import trail as audit
from learncredits.db import routing, store
from learncredits.domain import jurisdictions
from learncredits.domain.errors import NotFound, ValidationFailed
from learncredits.tenancy import access, recipients, team
from learncredits.tenancy.models import (
    ApiKey,
    ApiKeyPrefix,
    Employee,
    Membership,
    Organization,
)

logger = logging.getLogger(__name__)
KEY_PREFIX = "lc"
MAX_THRESHOLD = 1_000_000_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: the operator (every org) or one org's API key."""

    org_id: int | None
    label: str
    # The key's organization, read with the key (saves a query on every org-scoped call).
    org: Organization | None = dataclass_field(default=None, compare=False, repr=False)
    # What the caller may do inside its org (a Membership.Role value; "operator" for the
    # operator). A manager acts only for employees of ``department_ids``, within budget.
    role: str = "admin"
    department_ids: frozenset[int] = frozenset()

    @property
    def is_operator(self) -> bool:
        return self.org_id is None

    @property
    def scope(self) -> str:
        return "operator" if self.org_id is None else f"org_{self.org_id}"


OPERATOR = Principal(org_id=None, label="operator", role="operator")


# What the columns hold (every name column is 200 characters, every email 254): checked
# here so a longer value is a clear 422 on both databases, not a database error.
NAME_MAX_LENGTH = 200
EMAIL_MAX_LENGTH = 254


def _clean_email(email: str, field: str) -> str:
    email = email.strip().lower()
    if len(email) > EMAIL_MAX_LENGTH:
        raise ValidationFailed(f"{field} is longer than {EMAIL_MAX_LENGTH} characters")
    try:
        validate_email(email)
    except DjangoValidationError:
        raise ValidationFailed(f"{field} is not a valid email address") from None
    return email


def _clean_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"unknown time zone {name!r}") from None
    return name


def _clean_name(name: str, field: str = "name") -> str:
    name = name.strip()
    if not name:
        raise ValidationFailed(f"{field} must not be empty")
    if len(name) > NAME_MAX_LENGTH:
        raise ValidationFailed(f"{field} is longer than {NAME_MAX_LENGTH} characters")
    return name


def clean_email(email: str, field: str = "email") -> str:
    """The one rule for an email address (lower-cased), for other tenancy modules."""
    return _clean_email(email, field)


def clean_name(name: str, field: str = "name") -> str:
    return _clean_name(name, field)


def _clean_threshold(value: int) -> int:
    """The one bound on an alert threshold, for the API, the pages and the console alike."""
    if abs(value) > MAX_THRESHOLD:
        raise ValidationFailed(f"alert_threshold must be within ±{MAX_THRESHOLD}")
    return value


MIN_THRESHOLD_PERCENT = 1
MAX_THRESHOLD_PERCENT = 99


def clean_threshold_percent(value: object) -> int | None:
    """The one rule for a threshold given as a percentage of the credits held
    (domain/balance.AlertThreshold): a whole percent from 1 to 99, or None for a number of
    credits instead. 100 would keep an org at risk whenever anything is reserved."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        value = ids.whole_number(value, low=-MAX_THRESHOLD, high=MAX_THRESHOLD)
    if value is None or not MIN_THRESHOLD_PERCENT <= value <= MAX_THRESHOLD_PERCENT:
        raise ValidationFailed(
            f"alert_threshold_percent must be a whole number from {MIN_THRESHOLD_PERCENT} "
            f"to {MAX_THRESHOLD_PERCENT}, or null for a number of credits",
            field="alert_threshold_percent",
        )
    return value


MAX_RELEASE_UNSTARTED_DAYS = 3650


def clean_release_unstarted_after_days(value: object) -> int | None:
    """The one rule for the aging setting (credits/aging.py): a whole number of days from 1
    to 3650, or None for never."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        value = ids.whole_number(value, low=1, high=MAX_RELEASE_UNSTARTED_DAYS) or 0
    if not 1 <= value <= MAX_RELEASE_UNSTARTED_DAYS:
        raise ValidationFailed(
            "release_unstarted_after_days must be a whole number of days from 1 to "
            f"{MAX_RELEASE_UNSTARTED_DAYS}, or null for never"
        )
    return value


def create_org_record(
    *,
    name: str,
    billing_email: str,
    timezone_name: str = "UTC",
    alert_threshold: int = 0,
    actor: str = "system",
) -> Organization:
    """The organization row, checked and audited, without the balance row every org needs.

    Callers create orgs with ``credits.accounts.create_org``, which adds that row in the same
    transaction: the balance belongs to credits, which sits above tenancy and so is the one
    that may know both."""
    with transaction.atomic():
        org = Organization.objects.create(
            name=_clean_name(name),
            billing_email=_clean_email(billing_email, "billing_email"),
            timezone=_clean_timezone(timezone_name),
            alert_threshold=_clean_threshold(alert_threshold),
        )
        audit.record(actor, "org.create", org_id=org.pk, target=f"org_{org.pk}", name=org.name)
    return org


def clean_tax_profile(value: object) -> dict[str, object]:
    """A tax profile from a request (``{"country", "region", "tax_id", "exempt"}``, or None
    to remove it) as the org's four columns; 422 naming the problem, for each field."""
    if value is None:
        return {"tax_country": "", "tax_region": "", "tax_id": "", "tax_exempt": False}
    if not isinstance(value, Mapping):
        raise ValidationFailed("tax must be an object with country, region, tax_id and exempt")
    unknown = sorted(set(value) - {"country", "region", "tax_id", "exempt"})
    if unknown:
        raise ValidationFailed(f"tax has unknown fields: {', '.join(map(str, unknown))}")
    country = jurisdictions.normalize_country(value.get("country"), field="tax.country")
    region = jurisdictions.normalize_region(country, value.get("region"), field="tax.region")
    raw_id = value.get("tax_id")
    tax_id = (
        ""
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip())
        else jurisdictions.normalize_tax_id(country, raw_id, field="tax.tax_id")
    )
    exempt = value.get("exempt", False)
    if not isinstance(exempt, bool):
        raise ValidationFailed("tax.exempt must be true or false", field="tax.exempt")
    return {
        "tax_country": country,
        "tax_region": region or "",
        "tax_id": tax_id,
        "tax_exempt": exempt,
    }


def clean_org_settings(
    changes: Mapping[str, object], org: Organization | None = None
) -> dict[str, object]:
    """The organization's settings as they would be stored, every value checked first, so a
    change with one refused value writes nothing. ``tax`` is the tax profile as a whole (or
    None to remove it). A threshold in credits given without a percentage switches the org
    back to credits (so a caller that knows only ``alert_threshold`` keeps meaning it).
    ``alert_recipients`` needs ``org`` (its owners and admins). The write itself is
    ``credits.accounts.update_org_settings``: a threshold change must re-evaluate the
    balance's at-risk state in the same transaction."""
    cleaners: dict[str, Callable[[Any], object]] = {
        "name": lambda v: _clean_name(str(v)),
        "billing_email": lambda v: _clean_email(str(v), "billing_email"),
        "timezone": lambda v: _clean_timezone(str(v)),
        "alert_threshold": lambda v: _clean_threshold(int(v)),
        "alert_threshold_percent": clean_threshold_percent,
        "release_unstarted_after_days": clean_release_unstarted_after_days,
    }
    cleaned: dict[str, object] = {}
    for field, value in changes.items():
        if field == "tax":
            cleaned.update(clean_tax_profile(value))
        elif field == "alert_recipients" and org is not None:
            cleaned[field] = recipients.clean_alert_recipients(org, value)
        elif field in cleaners:
            cleaned[field] = cleaners[field](value)
        else:
            raise ValidationFailed(f"{field} is not an organization setting")
    if (
        "alert_threshold" in cleaned
        and "alert_threshold_percent" not in changes
        and (org is None or org.alert_threshold_percent is not None)
    ):
        cleaned["alert_threshold_percent"] = None
    return cleaned


def save_org_settings(org: Organization, cleaned: Mapping[str, object], *, actor: str) -> None:
    """Write settings already checked by ``clean_org_settings``, with their ``org.update``
    audit row (before and after), in the caller's transaction: the one write of the org's
    settings, for ``credits.accounts.update_org_settings`` and ``set_alert_recipients``."""
    before = {field: getattr(org, field) for field in cleaned}
    for field, value in cleaned.items():
        setattr(org, field, value)
    org.save(update_fields=list(cleaned))
    audit.record(
        actor,
        "org.update",
        org_id=org.pk,
        target=f"org_{org.pk}",
        before=before,
        after=dict(cleaned),
    )


def set_alert_recipients(org: Organization, value: object, *, actor: str) -> Organization:
    """Choose who receives the org's alert emails (None: back to the defaults), for the
    page. Checked first by the one rule (``recipients.clean_alert_recipients``, refusing
    with ``invalid_recipients``); the write and its audit row are one transaction. No
    balance lock: who is emailed changes nothing the write paths decide on."""
    cleaned = recipients.clean_alert_recipients(org, value)
    with transaction.atomic():
        save_org_settings(org, {"alert_recipients": cleaned}, actor=actor)
    return org


def get_org(org_id: int) -> Organization:
    try:
        return Organization.objects.get(pk=org_id)
    except Organization.DoesNotExist:
        raise NotFound("organization not found") from None


def create_employee(org: Organization, *, name: str, email: str, actor: str = "system") -> Employee:
    """A new employee of the org, audited like every other change to who is in it."""
    try:
        with transaction.atomic():
            employee = Employee.objects.create(
                org=org, name=_clean_name(name), email=_clean_email(email, "email")
            )
            record_employees_created(actor, org, [employee])
            return employee
    except IntegrityError:
        raise ValidationFailed("an employee with this email already exists") from None


def record_employees_created(
    actor: str, org: Organization, employees: Iterable[Employee], **details: Any
) -> None:
    """Audit each new employee as ``employee.create``, the one shape of that row whoever
    made them (by hand or by CSV import); ``details`` are added to each row's (the import's
    ``source``)."""
    for employee in employees:
        audit.record(
            actor,
            "employee.create",
            org_id=org.pk,
            target=f"emp_{employee.pk}",
            email=employee.email,
            **details,
        )


# --- API keys -----------------------------------------------------------------------------


def _hash_secret(secret: str) -> str:
    # API keys carry 256 bits of randomness, so a fast hash is safe (unlike passwords).
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    org: Organization,
    *,
    name: str,
    actor: str = "system",
    role: str = access.ADMIN,
    department_ids: Iterable[int] | None = None,
) -> tuple[ApiKey, str]:
    """A new key for the org, acting with ``role`` (admin, billing or manager; a manager key
    for ``department_ids``, departments of this org); returns the row and the full key,
    which is never stored."""
    if role not in access.KEY_ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(access.KEY_ROLES)}", field="role")
    name = _clean_name(name)
    departments = team.clean_departments(org, role, department_ids)
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    with transaction.atomic():
        ApiKeyPrefix.objects.create(prefix=prefix, org=org)
        key = ApiKey.objects.create(
            org=org, name=name, prefix=prefix, secret_hash=_hash_secret(secret), role=role
        )
        key.departments.set(departments)
        audit.record(
            actor,
            "api_key.create",
            org_id=org.pk,
            target=f"key_{key.pk}",
            name=key.name,
            prefix=prefix,
            role=role,
            department_ids=[d.pk for d in departments],
        )
    return key, f"{KEY_PREFIX}_{prefix}_{secret}"


def revoke_api_key(org: Organization, key_id: int, *, actor: str) -> ApiKey:
    """Revoke a key: it stops working at once; the row stays for the audit trail."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().filter(org=org, pk=key_id).first()
        if key is None:
            raise NotFound("API key not found")
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            audit.record(actor, "api_key.revoke", org_id=org.pk, target=f"key_{key.pk}")
    return key


_KEY_TOUCH_EVERY = timedelta(minutes=1)
# After a failed touch from a replica-served request, touches from such requests wait this
# long (seconds), so a primary that is down is not tried (and its timeout paid) each time.
_TOUCH_RETRY_SECONDS = 10.0
_touch_skipped_until = 0.0


def _touch_key(key_id: int, now: datetime) -> None:
    """Record the key's use on the primary. For a request served by the replica this is
    bookkeeping that must not cost the answer: with the primary down the report still
    answers, and the touch is tried again later. Elsewhere a failure fails the request, as
    the request's own writes would."""
    global _touch_skipped_until
    if not routing.reading_from_replica():
        store.touch_api_key(key_id, now)
        return
    if time.monotonic() < _touch_skipped_until:
        return
    try:
        store.touch_api_key(key_id, now)
    except DatabaseError as exc:
        _touch_skipped_until = time.monotonic() + _TOUCH_RETRY_SECONDS
        logger.warning("API key use not recorded (primary unavailable): %s", exc)


def authenticate_token(token: str) -> Principal | None:
    """The principal a bearer token stands for, or None if it stands for nobody."""
    operator_token = settings.LEARNCREDITS_OPERATOR_TOKEN
    if operator_token and hmac.compare_digest(token.encode(), operator_token.encode()):
        return OPERATOR
    head, _, rest = token.partition("_")
    prefix, _, secret = rest.partition("_")
    if head != KEY_PREFIX or not prefix or not secret:
        return None
    # A report routed to the replica checks its key there too, so it answers while the
    # primary is down (db/routing.py); every other request checks it on the primary. One
    # prebuilt statement (the store's): every API request authenticates, and building this
    # query with the ORM cost more Python than the rest of a balance read.
    key = store.active_api_key(prefix, using=routing.read_alias())
    if key is None or not hmac.compare_digest(key.secret_hash, _hash_secret(secret)):
        return None
    org, key_id = key.org, key.id
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > _KEY_TOUCH_EVERY:
        _touch_key(key_id, now)
    departments: frozenset[int] = frozenset()
    if key.role == access.MANAGER:
        departments = frozenset(
            ApiKey.departments.through.objects.using(routing.read_alias())
            .filter(apikey_id=key_id)
            .values_list("department_id", flat=True)
        )
    return Principal(
        org_id=org.pk,
        label=f"api_key:key_{key_id}",
        org=org,
        role=key.role,
        department_ids=departments,
    )


# --- sign-in accounts -----------------------------------------------------------------------


class EmailTaken(ValidationFailed):
    """The email is already a sign-in account (in this org, another one, or the operator's
    staff): the operator may be told so; an org admin only about their own org."""


def create_user(
    org: Organization,
    *,
    email: str,
    name: str,
    role: str,
    password: str | None,
    actor: str = "system",
    department_ids: Iterable[int] | None = None,
    by_role: str = access.OPERATOR,
) -> Membership:
    """A sign-in account with one of the org's roles; a learner is tied to the org's
    employee with that email, created if missing, and a manager to their departments.
    ``by_role`` is the role of who asks (only an owner, or the operator, makes owners).
    Without a password, an invitation with a link to choose one is emailed after the
    transaction commits."""
    email = _clean_email(email, "email")
    name = _clean_name(name)
    role = team.clean_role(role)
    team.check_may_grant(by_role, role)
    departments = team.clean_departments(org, role, department_ids)
    user_model = get_user_model()
    if user_model.objects.filter(username=email).exists():
        raise EmailTaken("a user with this email already exists")
    candidate = user_model(username=email, email=email, first_name=name[:150])
    if password is not None:
        try:
            validate_password(password, candidate)
        except DjangoValidationError as exc:
            raise ValidationFailed("; ".join(exc.messages), errors=exc.messages) from None
    try:
        with transaction.atomic():
            if password is None:
                candidate.set_unusable_password()
            else:
                candidate.set_password(password)
            candidate.save()
            employee = None
            if role == Membership.Role.LEARNER:
                employee, _ = Employee.objects.get_or_create(
                    org=org, email=email, defaults={"name": name}
                )
            membership = Membership.objects.create(
                org=org, user=candidate, role=role, employee=employee
            )
            membership.departments.set(departments)
            audit.record(
                actor,
                "user.create",
                org_id=org.pk,
                target=f"usr_{candidate.pk}",
                email=email,
                role=role,
                department_ids=[d.pk for d in departments],
            )
            if password is None:
                transaction.on_commit(lambda: _send_invitation(membership))
    except IntegrityError:
        raise EmailTaken("a user with this email already exists") from None
    return membership


def _send_invitation(membership: Membership) -> None:
    user = membership.user
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    token = default_token_generator.make_token(user)
    link = f"{settings.LEARNCREDITS_BASE_URL.rstrip('/')}/reset/{uid}/{token}/"
    send_mail(
        subject=f"You are invited to {membership.org.name} on learncredits",
        message=(
            f"Hello {user.first_name},\n\nYou have been invited as {membership.role} of "
            f"{membership.org.name}. Choose your password here:\n{link}\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[user.email],
        fail_silently=True,
    )


def invite_user(
    org: Organization,
    *,
    email: str,
    name: str,
    role: str,
    actor: str,
    by_role: str,
    department_ids: Iterable[int] | None = None,
) -> str:
    """An org admin's invitation; returns the address the answer names.

    Accounts are global (one email, one org), so "this email already has an account" would
    tell an admin that a person uses learncredits elsewhere. An address that belongs to this
    org's own members is refused plainly (the admin can see those); any other existing
    account is answered exactly as a sent invitation: the same address, and for a learner
    the same employee record in this org. That account is left untouched and receives no
    link that could set its password or move it here, only a notice that someone tried.
    """
    email = _clean_email(email, "email")
    try:
        create_user(
            org,
            email=email,
            name=name,
            role=role,
            password=None,
            actor=actor,
            department_ids=department_ids,
            by_role=by_role,
        )
    except EmailTaken:
        # Validation (name, role) has passed: create_user checks the email after them.
        _answer_as_invited(org, email=email, name=_clean_name(name), role=role, actor=actor)
    return email


def _answer_as_invited(org: Organization, *, email: str, name: str, role: str, actor: str) -> None:
    user = get_user_model().objects.filter(username=email).first()
    member_org = Membership.objects.filter(user=user).values_list("org_id", flat=True).first()
    if user is None or member_org == org.pk:
        # No account after all (deleted meanwhile), or this org's own member.
        raise ValidationFailed("a user with this email already exists in this organization")
    with transaction.atomic():
        if role == Membership.Role.LEARNER:
            Employee.objects.get_or_create(org=org, email=email, defaults={"name": name})
        audit.record(
            actor,
            "user.invite_existing_account",
            org_id=org.pk,
            target=f"usr_{user.pk}",
            email=email,
            role=role,
        )
        org_name = org.name
        transaction.on_commit(lambda: _send_existing_account_notice(email, org_name))


def _send_existing_account_notice(email: str, org_name: str) -> None:
    send_mail(
        subject=f"Someone tried to invite you to {org_name} on learncredits",
        message=(
            f"Hello,\n\nAn administrator of {org_name} tried to invite this address to "
            "learncredits. You already have an account, so nothing was changed and you have "
            "not joined that organization. If you expected this, tell them to contact "
            "support; otherwise you can ignore this message.\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[email],
        fail_silently=True,
    )
