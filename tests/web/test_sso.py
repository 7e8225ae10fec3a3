"""Single sign-on with OpenID Connect: the org's configuration through the API (and its
refusals), then the email-first sign-in against a real provider (tests/oidc, run by Node.js)
played without a browser: the first sign-in makes a learner, the second reuses it, other
domains, unverified addresses and other orgs' accounts are refused, and "SSO required"
refuses the password form to everyone but the owner."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from learncredits.audit.models import AuditEvent
from learncredits.tenancy.models import Employee, Membership, SsoConfig, SsoDomain
from tests.conftest import OrgHandle, ok
from tests.oidc_provider import Provider, running_provider, sign_in_at_provider

PASSWORD = "Quiet-Harbour-Lantern-42"
BASE = "http://testserver"


@pytest.fixture(autouse=True)
def _sso_settings(settings: Any) -> None:
    settings.LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST = True
    settings.LEARNCREDITS_BASE_URL = BASE
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def sso_body(issuer: str = "https://idp.example.com", **changes: Any) -> dict[str, Any]:
    body = {
        "issuer": issuer,
        "client_id": "client-1",
        "client_secret": "secret-1",
        "email_domains": ["acme.example"],
        "required": False,
    }
    body.update(changes)
    return body


# --- the configuration, through the API ---------------------------------------------------------


@pytest.mark.django_db
def test_an_org_sets_up_reads_changes_and_turns_off_its_single_sign_on(org: OrgHandle):
    assert org.api.get(org.path("/sso")).status == 404
    answer = ok(
        org.api.put(org.path("/sso"), sso_body(email_domains=["Acme.Example", "acme-labs.example"]))
    )
    assert answer["issuer"] == "https://idp.example.com"
    assert answer["client_id"] == "client-1"
    assert answer["email_domains"] == ["acme-labs.example", "acme.example"]
    assert answer["required"] is False
    assert answer["redirect_uri"] == f"{BASE}/login/sso/callback"
    assert "client_secret" not in answer and "secret-1" not in str(answer)
    assert ok(org.api.get(org.path("/sso"))) == answer

    # Leaving the secret out keeps the stored one; the domains are replaced as a whole.
    body = sso_body(email_domains=["acme.example"], required=True)
    del body["client_secret"]
    changed = ok(org.operator.put(org.path("/sso"), body))
    assert changed["email_domains"] == ["acme.example"] and changed["required"] is True
    assert SsoConfig.objects.get().client_secret == "secret-1"
    assert list(SsoDomain.objects.values_list("domain", flat=True)) == ["acme.example"]

    response = org.api.request("DELETE", org.path("/sso"))
    assert response.status == 204
    assert org.api.get(org.path("/sso")).status == 404
    assert not SsoDomain.objects.exists()
    assert org.api.request("DELETE", org.path("/sso")).status == 404
    actions = list(
        AuditEvent.objects.filter(action__startswith="sso.").values_list("action", flat=True)
    )
    assert actions == ["sso.configure", "sso.configure", "sso.disable"]
    assert "secret-1" not in str(list(AuditEvent.objects.values_list("details", flat=True)))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"issuer": "http://idp.example.com"}, "https"),
        ({"issuer": "ftp://idp.example.com"}, "https"),
        ({"issuer": "not a url"}, "https"),
        ({"issuer": "https://idp.example.com/?tenant=1"}, "query"),
        ({"issuer": "https://user:pw@idp.example.com"}, "credentials"),
        ({"issuer": "https://idp.example.com:99999"}, "not a valid URL"),
        ({"email_domains": ["not a domain"]}, "is not an email domain"),
        ({"email_domains": ["@acme.example"]}, "is not an email domain"),
        ({"email_domains": ["localhost"]}, "is not an email domain"),
        ({"email_domains": []}, "email_domains"),
        ({"client_id": "   "}, "client_id must not be empty"),
        ({"client_secret": " "}, "client_secret must not be empty"),
        ({"required": "yes"}, "required"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_configurations_are_refused_clearly_and_change_nothing(
    org: OrgHandle, changes: dict[str, Any], expected: str
):
    response = org.api.put(org.path("/sso"), sso_body(**changes))
    assert response.status == 422, response.body
    assert response.code == "validation_error"
    assert expected in response.body["detail"]
    assert not SsoConfig.objects.exists() and not SsoDomain.objects.exists()


@pytest.mark.django_db
def test_plain_http_is_for_a_local_provider_in_development_only(org: OrgHandle, settings: Any):
    settings.LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST = False
    settings.DEBUG = False
    refused = org.api.put(org.path("/sso"), sso_body(issuer="http://127.0.0.1:4000"))
    assert refused.status == 422 and "https" in refused.body["detail"]
    settings.LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST = True
    ok(org.api.put(org.path("/sso"), sso_body(issuer="http://127.0.0.1:4000")))
    still_refused = org.api.put(org.path("/sso"), sso_body(issuer="http://idp.example.com"))
    assert still_refused.status == 422


@pytest.mark.django_db
def test_the_first_set_up_needs_the_client_secret(org: OrgHandle):
    body = sso_body()
    del body["client_secret"]
    response = org.api.put(org.path("/sso"), body)
    assert response.status == 422 and "client_secret is required" in response.body["detail"]


@pytest.mark.django_db
def test_an_email_domain_signs_in_through_one_org_only(make_org):
    first, second = make_org("First"), make_org("Second")
    ok(first.api.put(first.path("/sso"), sso_body(email_domains=["acme.example"])))
    taken = second.api.put(
        second.path("/sso"), sso_body(email_domains=["ACME.example", "second.example"])
    )
    assert taken.status == 409, taken.body
    assert taken.code == "email_domain_taken"
    assert "acme.example" in taken.body["detail"]
    assert taken.body["domains"] == ["acme.example"]
    assert not SsoConfig.objects.filter(org__name="Second").exists()
    # The same org may save its own domains again; once freed, another org may take them.
    ok(first.api.put(first.path("/sso"), sso_body(email_domains=["acme.example"])))
    assert first.api.request("DELETE", first.path("/sso")).status == 204
    ok(second.api.put(second.path("/sso"), sso_body(email_domains=["acme.example"])))


@pytest.mark.django_db
def test_another_orgs_key_cannot_see_or_change_the_configuration(make_org):
    owner, stranger = make_org("Owner"), make_org("Stranger")
    ok(owner.api.put(owner.path("/sso"), sso_body()))
    assert stranger.api.get(owner.path("/sso")).status == 404
    assert stranger.api.put(owner.path("/sso"), sso_body(client_id="evil")).status == 404
    assert stranger.api.request("DELETE", owner.path("/sso")).status == 404
    assert SsoConfig.objects.get().client_id == "client-1"


# --- signing in against a real provider ---------------------------------------------------------


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    logs = tmp_path_factory.mktemp("oidc")
    with running_provider([f"{BASE}/login/sso/callback"], logs) as running:
        yield running


@pytest.fixture
def acme(org: OrgHandle, provider: Provider) -> OrgHandle:
    body = sso_body(
        issuer=provider.issuer,
        client_id=provider.client_id,
        client_secret=provider.client_secret,
    )
    ok(org.api.put(org.path("/sso"), body))
    return org


def add_user(org: OrgHandle, email: str, role: str = "admin") -> Membership:
    body = {
        "email": email,
        "name": email.split("@")[0],
        "role": "admin" if role == "owner" else role,
        "password": PASSWORD,
    }
    ok(org.operator.post(org.path("/users"), body), 201)
    membership = Membership.objects.get(user__username=email)
    if role == "owner":
        Membership.objects.filter(pk=membership.pk).update(role="owner")
        membership.refresh_from_db()
    return membership


def start(client: Client, email: str) -> str:
    """The email step: for an SSO domain, a page that continues to /login/sso/start, which
    redirects to the provider's authorization endpoint. Returns that URL."""
    page = client.post("/login", {"username": email})
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-testid="sso-continue"' in body, body
    link = re.search(r'href="(/login/sso/start\?[^"]+)"', body)
    assert link
    to_provider = client.get(unescape(link.group(1)))
    assert to_provider.status_code == 302, to_provider.content.decode()[:500]
    return to_provider["Location"]


def single_sign_on(client: Client, email: str, account: str | None = None) -> Any:
    """Sign in with ``email`` at our page, as ``account`` at the provider; our answer."""
    authorization = start(client, email)
    query = dict(
        part.split("=", 1) for part in urlsplit(authorization).query.split("&") if "=" in part
    )
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert query["state"] and query["nonce"]
    back = sign_in_at_provider(authorization, account or email.lower())
    assert back.startswith(f"{BASE}/login/sso/callback?"), back
    return client.get(back[len(BASE) :])


def signed_in_as(client: Client) -> str | None:
    user_id = client.session.get("_auth_user_id")
    if user_id is None:
        return None
    return str(get_user_model().objects.get(pk=user_id).username)


@pytest.mark.django_db
def test_the_first_sign_in_makes_a_learner_and_the_second_reuses_it(acme: OrgHandle):
    client = Client()
    answer = single_sign_on(client, "Ada@Acme.example")
    assert answer.status_code == 302 and answer["Location"] == "/"
    assert signed_in_as(client) == "ada@acme.example"
    membership = Membership.objects.get(user__username="ada@acme.example")
    assert membership.role == "learner"
    assert membership.org.name == "Acme"
    employee = Employee.objects.get(pk=membership.employee_id)
    assert (employee.email, employee.name) == ("ada@acme.example", "Ada Byron")
    assert not membership.user.has_usable_password()
    assert client.get("/").status_code == 302  # a learner's home is their own page
    assert client.get("/learn").status_code == 200

    again = Client()
    assert single_sign_on(again, "ada@acme.example").status_code == 302
    assert signed_in_as(again) == "ada@acme.example"
    assert Membership.objects.filter(user__username="ada@acme.example").count() == 1
    assert Employee.objects.filter(email="ada@acme.example").count() == 1
    assert AuditEvent.objects.filter(action="user.create", actor="system:sso").count() == 1


@pytest.mark.django_db
def test_an_existing_employee_and_an_existing_admin_are_reused(acme: OrgHandle):
    employee_id = acme.employee("Bob Stone", "bob@acme.example")
    client = Client()
    assert single_sign_on(client, "bob@acme.example").status_code == 302
    membership = Membership.objects.get(user__username="bob@acme.example")
    assert f"emp_{membership.employee_id}" == employee_id

    add_user(acme, "olga@acme.example", "admin")
    admin = Client()
    assert single_sign_on(admin, "olga@acme.example").status_code == 302
    assert signed_in_as(admin) == "olga@acme.example"
    assert Membership.objects.get(user__username="olga@acme.example").role == "admin"


@pytest.mark.django_db
def test_a_person_of_another_domain_is_refused(acme: OrgHandle):
    client = Client()
    answer = single_sign_on(client, "ada@acme.example", account="eve@elsewhere.example")
    assert answer.status_code == 403
    assert "eve@elsewhere.example is not an address of Acme" in answer.content.decode()
    assert signed_in_as(client) is None
    assert not get_user_model().objects.filter(username="eve@elsewhere.example").exists()
    assert not Employee.objects.filter(email="eve@elsewhere.example").exists()


@pytest.mark.django_db
def test_an_address_the_provider_has_not_verified_is_refused(acme: OrgHandle):
    client = Client()
    answer = single_sign_on(client, "nina@acme.example")
    assert answer.status_code == 403
    assert "has not verified nina@acme.example" in answer.content.decode()
    assert signed_in_as(client) is None
    assert not Membership.objects.filter(user__username="nina@acme.example").exists()


@pytest.mark.django_db
def test_an_account_of_another_org_is_not_taken_over(acme: OrgHandle, make_org):
    other = make_org("Other")
    carl = add_user(other, "carl@acme.example", "admin")
    client = Client()
    answer = single_sign_on(client, "carl@acme.example")
    assert answer.status_code == 403
    assert "not part of Acme" in answer.content.decode()
    assert signed_in_as(client) is None
    carl.refresh_from_db()
    assert carl.org.name == "Other" and carl.role == "admin"
    assert not Employee.objects.filter(org__name="Acme", email="carl@acme.example").exists()


@pytest.mark.django_db
def test_a_forged_or_replayed_answer_signs_nobody_in(acme: OrgHandle):
    client = Client()
    authorization = start(client, "ada@acme.example")
    back = sign_in_at_provider(authorization, "ada@acme.example")
    callback = back[len(BASE) :]
    forged = re.sub(r"state=[^&]+", "state=forged", callback)
    assert client.get(forged).status_code == 400
    assert signed_in_as(client) is None
    # Another browser (no state in its session) cannot use the code either.
    assert Client().get(callback).status_code == 400
    assert client.get(callback).status_code == 302
    assert signed_in_as(client) == "ada@acme.example"
    # The same answer a second time: its state was used up.
    assert Client().get(callback).status_code == 400
    replay = client.get(callback)
    assert replay.status_code == 400


@pytest.mark.django_db
def test_an_issuer_that_does_not_match_the_provider_is_refused(org: OrgHandle, provider: Provider):
    localhost_issuer = provider.issuer.replace("127.0.0.1", "localhost")
    body = sso_body(
        issuer=localhost_issuer, client_id=provider.client_id, client_secret=provider.client_secret
    )
    ok(org.api.put(org.path("/sso"), body))
    client = Client()
    client.post("/login", {"username": "ada@acme.example"})
    refused = client.get("/login/sso/start?email=ada%40acme.example")
    assert refused.status_code == 502
    assert "cannot be reached" in refused.content.decode()


@pytest.mark.django_db
def test_a_provider_that_is_down_gets_a_clear_page(org: OrgHandle):
    ok(org.api.put(org.path("/sso"), sso_body(issuer="http://127.0.0.1:9")))
    refused = Client().get("/login/sso/start?email=ada%40acme.example")
    assert refused.status_code == 502
    assert "cannot be reached right now" in refused.content.decode()


# --- the email step and the password form ---------------------------------------------------------


@pytest.mark.django_db
def test_an_address_without_single_sign_on_gets_the_password_form(acme: OrgHandle):
    add_user(acme, "pat@plain.example", "admin")
    client = Client()
    first = client.get("/login")
    assert 'data-testid="login-email-step"' in first.content.decode()
    assert 'name="password"' not in first.content.decode()
    step = client.post("/login", {"username": "pat@plain.example"})
    body = step.content.decode()
    assert 'data-testid="login-password-step"' in body and 'value="pat@plain.example"' in body
    signed = client.post("/login", {"username": "pat@plain.example", "password": PASSWORD})
    assert signed.status_code == 302
    assert signed_in_as(client) == "pat@plain.example"
    bad = Client().post("/login", {"username": "not an email"})
    assert bad.status_code == 422


@pytest.mark.django_db
def test_sso_required_refuses_the_password_form_except_to_the_owner(acme: OrgHandle):
    add_user(acme, "owner@plain.example", "owner")
    add_user(acme, "admin@plain.example", "admin")
    add_user(acme, "olga@acme.example", "learner")
    # Not required yet: passwords work for everyone.
    assert (
        Client()
        .post("/login", {"username": "admin@plain.example", "password": PASSWORD})
        .status_code
        == 302
    )

    body = sso_body(issuer=SsoConfig.objects.get().issuer, required=True)
    del body["client_secret"]
    ok(acme.api.put(acme.path("/sso"), body))
    for email in ("admin@plain.example", "olga@acme.example"):
        client = Client()
        refused = client.post("/login", {"username": email, "password": PASSWORD})
        assert refused.status_code == 200
        text = refused.content.decode()
        assert 'data-testid="sso-required"' in text
        assert "requires single sign-on" in text
        assert signed_in_as(client) is None
    owner = Client()
    assert (
        owner.post("/login", {"username": "owner@plain.example", "password": PASSWORD}).status_code
        == 302
    )
    assert signed_in_as(owner) == "owner@plain.example"
    # A wrong password is still just a wrong password (nothing said about the account).
    wrong = Client().post("/login", {"username": "admin@plain.example", "password": "nope"})
    assert "did not match" in wrong.content.decode()
    assert 'data-testid="sso-required"' not in wrong.content.decode()


# --- the settings page ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_owner_and_admins_set_it_up_on_the_settings_page(org: OrgHandle):
    owner = Client()
    owner.force_login(add_user(org, "owner@acme.example", "owner").user)
    page = owner.get("/settings/sso")
    assert page.status_code == 200
    assert f"{BASE}/login/sso/callback" in page.content.decode()
    saved = owner.post(
        "/settings/sso",
        {
            "form": "save",
            "issuer": "https://acme.okta.com",
            "client_id": "0oa1",
            "client_secret": "s3cr3t-from-okta",
            "email_domains": "acme.example, acme-labs.example",
            "required": "on",
        },
    )
    assert saved.status_code == 302
    config = SsoConfig.objects.get()
    assert (config.issuer, config.client_id, config.client_secret, config.required) == (
        "https://acme.okta.com",
        "0oa1",
        "s3cr3t-from-okta",
        True,
    )
    shown = owner.get("/settings/sso").content.decode()
    assert "s3cr3t-from-okta" not in shown and "acme-labs.example acme.example" in shown

    admin = Client()
    admin.force_login(add_user(org, "admin@acme.example", "admin").user)
    bad = admin.post(
        "/settings/sso",
        {
            "form": "save",
            "issuer": "http://acme.okta.com",
            "client_id": "0oa1",
            "email_domains": "acme.example",
        },
    )
    assert bad.status_code == 422 and "https" in bad.content.decode()
    assert admin.post("/settings/sso", {"form": "disable"}).status_code == 302
    assert not SsoConfig.objects.exists()

    learner = Client()
    learner.force_login(add_user(org, "lou@acme.example", "learner").user)
    assert learner.get("/settings/sso")["Location"] == "/learn"
    assert Client().get("/settings/sso").status_code == 302


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_orgs_racing_for_one_domain_leave_it_with_exactly_one(make_org):
    """Eight orgs claim the same domain at once: one wins, the others get 409 (the domain's
    primary key decides when the checks before the insert all pass together)."""
    from tests.conftest import Api, run_threads

    orgs = [make_org(f"Racer {n}") for n in range(8)]

    def work(i: int, api: Api) -> Any:
        return api.put(orgs[i].path("/sso"), sso_body(email_domains=["contested.example"]))

    answers = run_threads(8, work, setup=lambda i: Api(orgs[i].key))
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] + [409] * 7, [(a.status, a.body) for a in answers]
    assert {a.code for a in answers if a.status == 409} == {"email_domain_taken"}
    assert SsoDomain.objects.filter(domain="contested.example").count() == 1
    assert SsoConfig.objects.count() == 1
