"""The account menu's pages through Django's test client: every role sees its own profile and
changes its display name and password; a wrong current password, a weak new one and what
the identity provider keeps (a SCIM-provisioned name, the password of an account made by
single sign-on, signed in against the real test provider) are refused, saying why.

People sign in through /login with their password, as the browser does (the sign-in
throttle counts each attempt; these tests stay far below its limit).
"""

from __future__ import annotations

from html import unescape
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from learncredits.audit.models import AuditEvent
from learncredits.tenancy import access, provisioning
from learncredits.tenancy.models import Employee, Membership, Organization
from tests.conftest import OrgHandle, ok
from tests.oidc_provider import Provider
from tests.web.test_sso import acme, provider, single_sign_on  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

PASSWORD = "Correct-Horse-Battery-42"
NEW_PASSWORD = "Velvet-Otter-Compass-77"
BASE = "http://testserver"


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST = True
    settings.LEARNCREDITS_BASE_URL = BASE


def add_user(org: OrgHandle, email: str, role: str, name: str = "Pat Example") -> Any:
    body = {"email": email, "name": name, "role": role, "password": PASSWORD}
    ok(org.operator.post(org.path("/users"), body), 201)
    return get_user_model().objects.get(username=email)


def signed_in(email: str, password: str = PASSWORD) -> Client:
    client = Client()
    client.post("/login", {"username": email, "password": password})
    assert "_auth_user_id" in client.session, f"{email} could not sign in"
    return client


def signs_in(email: str, password: str) -> bool:
    client = Client()
    client.post("/login", {"username": email, "password": password})
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("role", access.MEMBER_ROLES)
def test_every_role_sees_its_profile_and_changes_its_name(org: OrgHandle, role: str) -> None:
    user = add_user(org, f"{role}@acme.example", role)
    client = signed_in(user.email)

    menu = client.get("/learn", follow=True).content.decode()
    assert 'href="/settings/profile" data-testid="account-profile">Profile<' in menu
    assert 'href="/settings/password" data-testid="account-password">Password<' in menu

    page = client.get("/settings/profile")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-testid="profile-name">Pat Example<' in text
    assert f'data-testid="profile-email">{role}@acme.example<' in text
    assert f'data-testid="profile-role">{role.title()}<' in text
    assert 'data-testid="profile-org">Acme<' in text

    saved = client.post("/settings/profile", {"name": "  Patricia Q. Example  "})
    assert (saved.status_code, saved["Location"]) == (302, "/settings/profile")
    user.refresh_from_db()
    assert user.get_full_name() == "Patricia Q. Example"
    after = client.get("/settings/profile").content.decode()
    assert "Your name is saved." in after
    assert "<summary>Patricia Q. Example</summary>" in after  # the menu's own label
    event = AuditEvent.objects.get(action="user.rename")
    assert (event.actor, event.target) == (f"user:usr_{user.pk}", f"usr_{user.pk}")
    assert event.details == {"before": "Pat Example", "after": "Patricia Q. Example"}


def test_a_blank_or_too_long_name_is_refused_and_nothing_changes(org: OrgHandle) -> None:
    user = add_user(org, "lea@acme.example", "learner")
    client = signed_in(user.email)
    for name, said in (("   ", "name must not be empty"), ("x" * 151, "at most 150 characters")):
        refused = client.post("/settings/profile", {"name": name})
        assert refused.status_code == 422
        assert said in refused.content.decode()
    user.refresh_from_db()
    assert user.get_full_name() == "Pat Example"
    assert not AuditEvent.objects.filter(action="user.rename").exists()


def test_a_scim_provisioned_name_stays_the_identity_providers(org: OrgHandle) -> None:
    user = add_user(org, "lea@acme.example", "learner")
    membership = Membership.objects.get(user=user)
    provisioning.update_employee(
        membership.org, membership.employee_id or 0, actor="scim:test", external_id="00u-lea"
    )
    client = signed_in(user.email)
    page = client.get("/settings/profile").content.decode()
    assert 'data-testid="profile-name-managed"' in page
    assert 'data-testid="profile-form"' not in page
    refused = client.post("/settings/profile", {"name": "Somebody Else"})
    assert refused.status_code == 409
    assert "comes from your organization's identity provider (SCIM)" in unescape(
        refused.content.decode()
    )
    user.refresh_from_db()
    assert user.get_full_name() == "Pat Example"


@pytest.mark.parametrize("role", ["learner", "owner"])
def test_changing_the_password_keeps_the_session_and_the_new_one_signs_in(
    org: OrgHandle, role: str
) -> None:
    user = add_user(org, "pat@acme.example", role)
    client = signed_in(user.email)
    assert client.get("/settings/password").status_code == 200
    changed = client.post(
        "/settings/password",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert (changed.status_code, changed["Location"]) == (302, "/settings/profile")
    # This session is still signed in (update_session_auth_hash); another one is not kept.
    assert "Your password is changed." in client.get("/settings/profile").content.decode()
    assert client.get("/settings/password").status_code == 200

    assert signs_in(user.email, NEW_PASSWORD)
    assert not signs_in(user.email, PASSWORD)
    event = AuditEvent.objects.get(action="user.password_change")
    assert (event.actor, event.target, event.org_id) == (
        f"user:usr_{user.pk}",
        f"usr_{user.pk}",
        Organization.objects.get(name="Acme").pk,
    )


def test_a_session_opened_before_the_change_is_signed_out(org: OrgHandle) -> None:
    user = add_user(org, "pat@acme.example", "admin")
    elsewhere = signed_in(user.email)
    here = signed_in(user.email)
    body = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    assert here.post("/settings/password", body).status_code == 302
    assert here.get("/settings/profile").status_code == 200
    gone = elsewhere.get("/settings/profile")
    assert gone.status_code == 302 and gone["Location"].startswith("/login")


def test_a_wrong_current_password_or_a_weak_new_one_is_refused(org: OrgHandle) -> None:
    user = add_user(org, "pat@acme.example", "billing")
    client = signed_in(user.email)
    cases = (
        ({"old_password": "not-it", "new_password1": NEW_PASSWORD}, "old password was entered"),
        ({"old_password": PASSWORD, "new_password1": "short"}, "too short"),
        ({"old_password": PASSWORD, "new_password1": "password123"}, "too common"),
    )
    for body, said in cases:
        refused = client.post(
            "/settings/password", {**body, "new_password2": body["new_password1"]}
        )
        assert refused.status_code == 422, said
        assert said in refused.content.decode(), said
        assert 'aria-invalid="true"' in refused.content.decode()
    mismatch = client.post(
        "/settings/password",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": "other"},
    )
    assert mismatch.status_code == 422
    assert "fields didn\u2019t match" in mismatch.content.decode()
    assert signs_in(user.email, PASSWORD)
    assert not AuditEvent.objects.filter(action="user.password_change").exists()


def test_guessing_the_current_password_spends_the_sign_in_budget(
    org: OrgHandle, settings: Any
) -> None:
    """A stolen session cannot guess the password here faster than at /login: each wrong
    current password spends the account's sign-in budget, and once it is spent even the
    right one is refused (429) until the cool-off, here and at /login alike."""
    user = add_user(org, "pat@acme.example", "manager")
    client = signed_in(user.email)
    right = {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    # A right current password gives its slot back: changes do not add up to a lock-out.
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        weak = client.post("/settings/password", {**right, "new_password1": "short"})
        assert weak.status_code == 422
    for _ in range(settings.AXES_FAILURE_LIMIT):
        assert (
            client.post("/settings/password", {**right, "old_password": "guess"}).status_code == 422
        )
    refused = client.post("/settings/password", right)
    assert refused.status_code == 429
    assert "too many wrong passwords" in refused.content.decode()
    assert not signs_in(user.email, PASSWORD)  # one budget with the sign-in form
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="user.password_change").exists()


def test_an_account_made_by_single_sign_on_has_no_password_to_change(
    acme: OrgHandle,  # noqa: F811  (the fixture)
    provider: Provider,  # noqa: F811
) -> None:
    client = Client()
    assert single_sign_on(client, "ada@acme.example").status_code == 302
    user = get_user_model().objects.get(username="ada@acme.example")
    assert not user.has_usable_password()

    page = client.get("/settings/password")
    assert page.status_code == 200
    text = page.content.decode()
    assert 'data-testid="password-refused"' in text
    assert "signs in with single sign-on and has no password here" in text
    assert 'data-testid="password-form"' not in text
    refused = client.post(
        "/settings/password",
        {"old_password": "", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert refused.status_code == 409
    assert "has no password here" in refused.content.decode()
    user.refresh_from_db()
    assert not user.has_usable_password()

    # Its display name is its own (single sign-on took it once, from the id token).
    profile = client.get("/settings/profile").content.decode()
    assert 'data-testid="profile-sign-in">single sign-on<' in profile
    assert "belongs to your organization's identity provider" in unescape(profile)
    assert client.post("/settings/profile", {"name": "Ada L."}).status_code == 302
    assert Employee.objects.get(email="ada@acme.example").name == "Ada Byron"  # untouched
    user.refresh_from_db()
    assert user.get_full_name() == "Ada L."
