"""An org admin invites more people from the dashboard; the invitation lets them choose a
password and sign in (operators invite an org's first admin; admins invite more)."""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.test import Client

from learncredits.tenancy.models import Employee, Membership
from tests.conftest import ok


def _admin_client(org, operator) -> Client:
    ok(
        operator.post(
            f"/orgs/{org.id}/users",
            {
                "email": "boss@example.com",
                "name": "Boss",
                "role": "admin",
                "password": "a-Long-enough-pass-42",
            },
        ),
        201,
    )
    client = Client()
    client.force_login(get_user_model().objects.get(username="boss@example.com"))
    return client


def test_an_admin_invites_a_learner_who_chooses_a_password(
    org, operator, mailoutbox, django_capture_on_commit_callbacks, settings
):
    settings.LEARNCREDITS_BASE_URL = "https://credits.example.com"
    admin = _admin_client(org, operator)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            "/employees",
            {"form": "invite", "name": "Nia", "email": "Nia@Example.com", "role": "learner"},
        )
    assert response.status_code == 302
    membership = Membership.objects.get(user__username="nia@example.com")
    assert membership.role == "learner"
    assert Employee.objects.get(pk=membership.employee_id).email == "nia@example.com"
    assert not membership.user.has_usable_password()

    invitation = [m for m in mailoutbox if m.to == ["nia@example.com"]]
    assert len(invitation) == 1
    link = re.search(r"https://credits\.example\.com(/reset/\S+/)", invitation[0].body)
    assert link, invitation[0].body

    visitor = Client()
    form = visitor.get(link.group(1), follow=True)
    assert form.status_code == 200
    set_password_url = form.redirect_chain[-1][0]
    done = visitor.post(
        set_password_url,
        {"new_password1": "Chosen-by-Nia-2026", "new_password2": "Chosen-by-Nia-2026"},
    )
    assert done.status_code == 302
    membership.user.refresh_from_db()
    assert membership.user.check_password("Chosen-by-Nia-2026")


def test_an_invitation_with_a_taken_email_is_refused_and_creates_nothing(org, operator):
    admin = _admin_client(org, operator)
    before = Membership.objects.count()
    response = admin.post(
        "/employees",
        {"form": "invite", "name": "Boss again", "email": "boss@example.com", "role": "admin"},
        follow=True,
    )
    assert b"already exists" in response.content
    assert Membership.objects.count() == before


def test_a_learner_cannot_invite(org, operator, make_content):
    ok(
        operator.post(
            f"/orgs/{org.id}/users",
            {
                "email": "lee@example.com",
                "name": "Lee",
                "role": "learner",
                "password": "a-Long-enough-pass-42",
            },
        ),
        201,
    )
    learner = Client()
    learner.force_login(get_user_model().objects.get(username="lee@example.com"))
    before = Membership.objects.count()
    response = learner.post(
        "/employees", {"form": "invite", "name": "X", "email": "x@example.com", "role": "admin"}
    )
    assert response.status_code == 302 and response["Location"].endswith("/learn")
    assert Membership.objects.count() == before
