"""Single sign-on in a real browser: Chromium (Playwright) against the live server and a real
OpenID Connect provider (tests/oidc, oidc-provider under Node.js).

The person types their email on /login, is taken to the provider, signs in there (the
provider's development sign-in and consent pages) and comes back signed in. The first
time makes a learner, the second reuses it; a person of another domain is refused; with
"SSO required" the password form refuses everyone of the org but its owner.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from learncredits.tenancy.models import Employee, Membership
from tests.conftest import OrgHandle, ok
from tests.oidc_provider import Provider, running_provider
from tests.web.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    PASSWORD,
    Visitor,
    _flushable,
    _quick_passwords,
    add_user,
    browse,
    chromium,
)

with contextlib.suppress(ImportError):  # without it, the browser marker skips, saying why
    from playwright.sync_api import expect


@pytest.fixture(scope="module")
def provider(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    callback = f"{live_server.url}/login/sso/callback"
    with running_provider([callback], tmp_path_factory.mktemp("oidc")) as running:
        yield running


@pytest.fixture(autouse=True)
def _sso_settings(settings: Any, live_server: Any) -> None:
    settings.LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST = True
    settings.LEARNCREDITS_BASE_URL = live_server.url


def set_up_sso(org: OrgHandle, provider: Provider, *, required: bool = False) -> None:
    body = {
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        "email_domains": ["acme.example"],
        "required": required,
    }
    ok(org.api.put(org.path("/sso"), body))


def sso_sign_in(
    person: Visitor, provider: Provider, email: str, account: str | None = None
) -> None:
    """Email on our page, then the provider's sign-in and consent pages, then back to us."""
    page = person.page
    person.open("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_test_id("login-continue").click()
    page.wait_for_url(re.compile(re.escape(provider.issuer) + r"/interaction/"))
    page.locator('input[name="login"]').fill(account or email)
    page.locator('input[name="password"]').fill("any")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()  # the consent page
    page.wait_for_url(re.compile(re.escape(person.base) + r"/"))
    page.wait_for_load_state("load")
    # The provider's own development pages ask for a web font this machine cannot reach.
    person.problems[:] = [p for p in person.problems if provider.issuer not in p]


@pytest.mark.browser
@pytest.mark.slow
def test_first_sso_sign_in_makes_a_learner_and_the_second_reuses_it(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    provider: Provider,
) -> None:
    org = make_org("Acme")
    set_up_sso(org, provider)

    ada = browse()
    sso_sign_in(ada, provider, "ada@acme.example")
    ada.at("/learn")
    expect(ada.page.get_by_role("heading", name="My learning")).to_be_visible()
    ada.shot("sso-first-sign-in")
    membership = Membership.objects.get(user__username="ada@acme.example")
    assert membership.role == "learner"
    first_employee = membership.employee_id
    assert Employee.objects.get(pk=first_employee).name == "Ada Byron"

    again = browse()
    sso_sign_in(again, provider, "ada@acme.example")
    again.at("/learn")
    assert Membership.objects.filter(user__username="ada@acme.example").count() == 1
    assert Employee.objects.filter(email="ada@acme.example").count() == 1
    assert Membership.objects.get(user__username="ada@acme.example").employee_id == first_employee
    ada.assert_clean()
    again.assert_clean()


@pytest.mark.browser
@pytest.mark.slow
def test_a_person_of_another_domain_is_refused_with_a_clear_page(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    provider: Provider,
) -> None:
    org = make_org("Acme")
    set_up_sso(org, provider)
    eve = browse()
    sso_sign_in(eve, provider, "ada@acme.example", account="eve@elsewhere.example")
    eve.at("/login/sso/callback")
    expect(eve.page.get_by_test_id("sso-refused")).to_contain_text(
        "eve@elsewhere.example is not an address of Acme"
    )
    # The refusal is answered with 403, which Chromium logs as a failed load: expected here.
    expected = "/login/sso/callback?"
    eve.problems[:] = [p for p in eve.problems if not (expected in p and "403" in p)]
    eve.shot("sso-other-domain-refused")
    assert not Membership.objects.filter(user__username="eve@elsewhere.example").exists()
    eve.open("/learn")
    eve.at("/login")  # not signed in


@pytest.mark.browser
@pytest.mark.slow
def test_sso_required_refuses_the_password_form_but_not_the_owner(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
    provider: Provider,
) -> None:
    org = make_org("Acme")
    add_user(org, "admin", "owen@acme-owner.example", "Owen Owner")
    Membership.objects.filter(user__username="owen@acme-owner.example").update(role="owner")
    add_user(org, "admin", "alma@acme-admins.example", "Alma Admin")
    set_up_sso(org, provider, required=True)

    alma = browse()
    alma.sign_in("alma@acme-admins.example")
    alma.at("/login")
    expect(alma.page.get_by_test_id("sso-required")).to_contain_text(
        "Your organization requires single sign-on"
    )
    alma.shot("sso-required-password-refused")

    # The owner still signs in with a password, here straight to the single sign-on page.
    owen = browse()
    owen.open("/login?next=/settings/sso")
    owen.page.get_by_label("Email").fill("owen@acme-owner.example")
    with owen.page.expect_navigation():
        owen.page.get_by_test_id("login-continue").click()
    owen.page.get_by_label("Password").fill(PASSWORD)
    with owen.page.expect_navigation():
        owen.page.get_by_test_id("login-submit").click()
    owen.at("/settings/sso")
    expect(owen.page.get_by_test_id("sso-redirect-uri")).to_have_text(
        f"{owen.base}/login/sso/callback"
    )
    owen.shot("sso-settings")

    # People of the SSO domain are sent to the provider from the email step.
    bob = browse()
    sso_sign_in(bob, provider, "bob@acme.example")
    bob.at("/learn")
    for person in (alma, owen, bob):
        person.assert_clean()
