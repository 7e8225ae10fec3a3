"""Single sign-on through an org's OpenID Connect provider: its configuration, which org an
email address signs in through, and who a provider's verified claims make signed in.

The protocol itself (discovery, the authorization code flow with PKCE, state and nonce, the
id token's signature and claims) is Authlib's, driven by the dashboard (web/sso_views.py);
this module decides everything that is ours: which issuers and domains are accepted, the
first sign-in that creates a learner, the refusals, and "SSO required" for passwords.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from learncredits.audit import trail as audit
from learncredits.domain.errors import (
    EmailDomainTaken,
    InvalidState,
    NotFound,
    SignInRefused,
    ValidationFailed,
)
from learncredits.tenancy import services
from learncredits.tenancy.models import (
    Employee,
    Membership,
    Organization,
    SsoConfig,
    SsoDomain,
)

ACTOR = "system:sso"
MAX_DOMAINS = 50
SCOPES = "openid email profile"
CALLBACK_PATH = "/login/sso/callback"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def redirect_uri() -> str:
    """The address every org registers at its provider as the sign-in redirect URI."""
    return f"{settings.LEARNCREDITS_BASE_URL.rstrip('/')}{CALLBACK_PATH}"


def discovery_url(issuer: str) -> str:
    """OpenID Connect Discovery: the issuer, without a trailing slash, plus the well-known
    path (so an issuer written with its trailing slash, as Auth0's is, still works)."""
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"


def _http_allowed(host: str) -> bool:
    return host in _LOCAL_HOSTS and bool(
        settings.DEBUG or settings.LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST
    )


def clean_issuer(value: str) -> str:
    """An https URL with a host and no query or fragment; plain http only for a provider on
    this machine during development (DEBUG, or LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST)."""
    issuer = value.strip()
    try:
        parts = urlsplit(issuer)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValidationFailed("issuer is not a valid URL", field="issuer") from None
    if parts.scheme not in {"https", "http"} or not host:
        raise ValidationFailed("issuer must be an https URL", field="issuer")
    if parts.scheme == "http" and not _http_allowed(host):
        raise ValidationFailed(
            "issuer must be an https URL (plain http only for a local provider in development)",
            field="issuer",
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValidationFailed(
            "issuer must not carry a query, a fragment or credentials", field="issuer"
        )
    if len(issuer) > 500:
        raise ValidationFailed("issuer must be at most 500 characters", field="issuer")
    return issuer


def clean_domain(value: str) -> str:
    """A lower-cased DNS name of at least two labels (``acme.example``), no ``@``."""
    domain = value.strip().lower().rstrip(".")
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_LABEL.match(lab) for lab in labels):
        raise ValidationFailed(
            f"{value!r} is not an email domain (like example.com)", field="email_domains"
        )
    return domain


def clean_domains(values: Iterable[str]) -> list[str]:
    domains = sorted({clean_domain(value) for value in values})
    if not domains:
        raise ValidationFailed("email_domains must name at least one domain", field="email_domains")
    if len(domains) > MAX_DOMAINS:
        raise ValidationFailed(
            f"email_domains may name at most {MAX_DOMAINS} domains", field="email_domains"
        )
    return domains


def _clean_text(value: str, field: str, limit: int = 255) -> str:
    value = value.strip()
    if not value:
        raise ValidationFailed(f"{field} must not be empty", field=field)
    if len(value) > limit:
        raise ValidationFailed(f"{field} must be at most {limit} characters", field=field)
    return value


def domains_of(config: SsoConfig) -> list[str]:
    return sorted(SsoDomain.objects.filter(org_id=config.org_id).values_list("domain", flat=True))


def get_config(org: Organization) -> SsoConfig:
    config = SsoConfig.objects.filter(org=org).first()
    if config is None:
        raise NotFound("single sign-on is not set up for this organization")
    return config


def configure(
    org: Organization,
    *,
    issuer: str,
    client_id: str,
    client_secret: str | None,
    email_domains: Iterable[str],
    required: bool,
    actor: str,
) -> SsoConfig:
    """Set up (or change) the org's single sign-on, all of it or nothing.

    ``client_secret`` None keeps the stored one (a form need not show it back); it must be
    given the first time. Every domain must be free or already this org's: a domain taken by
    another org is refused with ``email_domain_taken`` (409), which the domain's primary key
    also enforces when two orgs claim it at the same moment.
    """
    issuer = clean_issuer(issuer)
    client_id = _clean_text(client_id, "client_id")
    secret = None if client_secret is None else _clean_text(client_secret, "client_secret")
    domains = clean_domains(email_domains)
    if not isinstance(required, bool):
        raise ValidationFailed("required must be true or false", field="required")
    taken = list(
        SsoDomain.objects.filter(domain__in=domains)
        .exclude(org=org)
        .values_list("domain", flat=True)
    )
    if taken:
        raise EmailDomainTaken(_taken_message(taken), domains=sorted(taken))
    try:
        with transaction.atomic():
            config = SsoConfig.objects.select_for_update().filter(org=org).first()
            created = config is None
            if config is None:
                if secret is None:
                    raise ValidationFailed(
                        "client_secret is required to set up single sign-on",
                        field="client_secret",
                    )
                config = SsoConfig(org=org)
            config.issuer = issuer
            config.client_id = client_id
            if secret is not None:
                config.client_secret = secret
            config.required = required
            config.updated_at = timezone.now()
            config.save()
            SsoDomain.objects.filter(org=org).exclude(domain__in=domains).delete()
            have = set(SsoDomain.objects.filter(org=org).values_list("domain", flat=True))
            SsoDomain.objects.bulk_create(
                [SsoDomain(domain=d, org=org) for d in domains if d not in have]
            )
            audit.record(
                actor,
                "sso.configure",
                org_id=org.pk,
                target=f"org_{org.pk}",
                created=created,
                issuer=issuer,
                client_id=client_id,
                email_domains=domains,
                required=required,
                secret_changed=secret is not None,
            )
    except IntegrityError:
        # Another org took one of the domains between the check and the insert, or another
        # request set up this org's single sign-on at the same moment.
        taken = list(
            SsoDomain.objects.filter(domain__in=domains)
            .exclude(org=org)
            .values_list("domain", flat=True)
        )
        if taken:
            raise EmailDomainTaken(_taken_message(taken), domains=sorted(taken)) from None
        raise InvalidState(
            "single sign-on was being changed by another request at the same moment; try again"
        ) from None
    return config


def _taken_message(domains: list[str]) -> str:
    names = ", ".join(sorted(domains))
    return (
        f"email domain {names} already signs in through another organization"
        if len(domains) == 1
        else f"email domains {names} already sign in through another organization"
    )


def disable(org: Organization, *, actor: str) -> None:
    """Turn single sign-on off: its domains are freed and passwords work again for all."""
    with transaction.atomic():
        config = SsoConfig.objects.select_for_update().filter(org=org).first()
        if config is None:
            raise NotFound("single sign-on is not set up for this organization")
        SsoDomain.objects.filter(org=org).delete()
        config.delete()
        audit.record(actor, "sso.disable", org_id=org.pk, target=f"org_{org.pk}")


def domain_of(email: str) -> str:
    return email.strip().lower().rpartition("@")[2]


def config_for_email(email: str) -> SsoConfig | None:
    """The single sign-on an address signs in through, by its domain; None: a password."""
    domain = domain_of(email)
    if "@" not in email or not domain:
        return None
    found = SsoDomain.objects.filter(domain=domain).select_related("org__sso").first()
    if found is None:
        return None
    return SsoConfig.objects.filter(org_id=found.org_id).first()


def password_refusal(user: AbstractBaseUser | AnonymousUser) -> str | None:
    """Why this account may not sign in with a password, or None when it may: in an org that
    requires single sign-on, only its owner keeps a password (to reach the settings when the
    provider is down or misconfigured)."""
    membership: Membership | None = getattr(user, "membership", None)
    if membership is None or membership.role == Membership.Role.OWNER:
        return None
    if SsoConfig.objects.filter(org_id=membership.org_id, required=True).exists():
        return (
            "Your organization requires single sign-on: enter your email and continue to "
            "your organization's sign-in page instead of using a password."
        )
    return None


def _name_from(claims: Mapping[str, Any], email: str) -> str:
    name = claims.get("name")
    if not isinstance(name, str) or not name.strip():
        parts = [claims.get("given_name"), claims.get("family_name")]
        name = " ".join(p for p in parts if isinstance(p, str) and p.strip())
    return (name or email.partition("@")[0]).strip()[:200]


def sign_in(config: SsoConfig, claims: Mapping[str, Any]) -> Membership:
    """The account the provider's verified id token claims sign in, created the first time.

    The email must be present, not marked unverified, and of one of the org's domains. An
    account with that email is reused when it is this org's; an account of another org (or
    the operator's staff) is refused, never moved or taken over. The first time, a learner
    account is made, tied to the org's employee with that email (added if missing).
    """
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise SignInRefused("your identity provider did not give an email address")
    email = email.strip().lower()
    if claims.get("email_verified") is False:
        raise SignInRefused(
            f"your identity provider has not verified {email}; verify it there and try again"
        )
    domains = domains_of(config)
    if domain_of(email) not in domains:
        raise SignInRefused(
            f"{email} is not an address of {config.org.name}, which signs in people of "
            f"{', '.join(domains)} only"
        )
    for _attempt in range(2):
        membership = _existing(config.org, email)
        if membership is not None:
            return membership
        try:
            return _first_sign_in(config.org, email, _name_from(claims, email))
        except IntegrityError:
            continue  # the same person's other tab made the account first: use it
    raise SignInRefused("your account could not be created; try again")


def _existing(org: Organization, email: str) -> Membership | None:
    user = get_user_model().objects.filter(username=email).first()
    if user is None:
        return None
    membership = Membership.objects.filter(user=user).select_related("org", "user").first()
    if membership is None or membership.org_id != org.pk:
        raise SignInRefused(
            f"{email} already has a learncredits account that is not part of {org.name}; "
            "ask your administrator or support for help"
        )
    if not user.is_active:
        raise SignInRefused(f"the account {email} is deactivated")
    if membership.employee_id is not None and not membership.employee.active:  # type: ignore[union-attr]
        raise SignInRefused(f"{email} is no longer an active employee of {org.name}")
    return membership


def _first_sign_in(org: Organization, email: str, name: str) -> Membership:
    with transaction.atomic():
        employee = Employee.objects.filter(org=org, email=email).first()
        if employee is None:
            employee = services.create_employee(org, name=name, email=email, actor=ACTOR)
        elif not employee.active:
            raise SignInRefused(f"{email} is no longer an active employee of {org.name}")
        user = get_user_model()(username=email, email=email, first_name=name[:150])
        user.set_unusable_password()
        user.save()
        membership = Membership.objects.create(
            org=org, user=user, role=Membership.Role.LEARNER, employee=employee
        )
        audit.record(
            ACTOR,
            "user.create",
            org_id=org.pk,
            target=f"usr_{user.pk}",
            email=email,
            role=Membership.Role.LEARNER,
            via="sso",
        )
    return membership
