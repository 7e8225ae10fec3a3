"""The ``learncredits`` command (README.md, docs/operations.md, docs/product.md section 13).

``demo`` and ``verify_ledger`` run in-process through call_command against the test
database; the console script itself runs once as a subprocess on its own SQLite file.
"""

from __future__ import annotations

import io
import re
import stat
import subprocess
from pathlib import Path

import pytest
from django.core.management import call_command

from learncredits.catalog.models import Content
from learncredits.credits.models import Assignment, Balance, CreditLot, LedgerEntry, Purchase
from learncredits.tenancy.models import ApiKey, Employee, Membership, Organization
from tests.conftest import Api, around_the_balance_check, console_script, ok, service_env

KEY_LINE = re.compile(r"API key:\s+(\S+)")
ORG_LINE = re.compile(r"organization:.*\((org_\d+)\)")


def run_demo() -> str:
    out = io.StringIO()
    call_command("demo", stdout=out)
    return out.getvalue()


def row_counts() -> dict[str, int]:
    models = (
        Organization,
        Employee,
        ApiKey,
        Membership,
        Content,
        Purchase,
        CreditLot,
        Assignment,
        LedgerEntry,
    )
    return {model.__name__: model.objects.count() for model in models}


@pytest.fixture
def var_dir(settings, tmp_path: Path) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


# --- demo ------------------------------------------------------------------------------------


def test_demo_on_an_empty_database_creates_an_org_to_look_around_in(db, var_dir):
    assert not Organization.objects.exists()

    printed = run_demo()

    org = Organization.objects.get()
    assert Employee.objects.filter(org=org, active=True).count() >= 2
    assert Content.objects.filter(premium=True, credit_cost__gte=1).exists()
    assert Content.objects.filter(premium=False, credit_cost=0).exists()
    assert Purchase.objects.filter(org=org, status="paid").exists()
    assert Assignment.objects.filter(org=org, status="assigned").exists()
    assert Assignment.objects.filter(org=org, status="started").exists()
    balance = Balance.objects.get(org=org)
    assert balance.credits > 0 and balance.assigned > 0

    org_id = ORG_LINE.search(printed).group(1)
    assert org_id == f"org_{org.pk}"
    key = KEY_LINE.search(printed).group(1)
    api = Api(key)
    answer = ok(api.get(f"/orgs/{org_id}/balance"))
    assert (answer["credits"], answer["assigned"]) == (balance.credits, balance.assigned)
    employees = ok(api.get(f"/orgs/{org_id}/employees", limit=500))["data"]
    assert len(employees) == Employee.objects.filter(org=org).count()
    assert ok(api.get(f"/orgs/{org_id}/ledger", limit=500))["data"]


def test_demo_signs_in_an_owner_a_billing_user_and_a_manager_of_sales(db, var_dir):
    from django.test import Client

    from learncredits.tenancy.models import Membership

    printed = run_demo()
    roles = {m.user.email: m for m in Membership.objects.select_related("user")}
    assert {email: m.role for email, m in roles.items()} == {
        "admin@acme.example": "owner",
        "billing@acme.example": "billing",
        "manager@acme.example": "manager",
    }
    sales = roles["manager@acme.example"].departments.get()
    assert sales.name == "Sales" and sales.employees.count() == 4
    password = re.search(r"admin@acme\.example / (\S+)", printed).group(1)
    for email, page, status in (
        ("admin@acme.example", "/settings/team", 200),
        ("billing@acme.example", "/buy", 200),
        ("billing@acme.example", "/assign", 403),
        ("manager@acme.example", "/assign", 200),
        ("manager@acme.example", "/buy", 403),
    ):
        user = roles[email].user
        assert user.check_password(password), email
        client = Client()
        client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
        assert client.get(page).status_code == status, (email, page)


def test_demo_writes_its_credentials_file(db, var_dir):
    printed = run_demo()

    path = var_dir / "demo-credentials.txt"
    assert path.exists()
    key = KEY_LINE.search(printed).group(1)
    assert key in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_demo_credentials_file_is_complete_and_follows_the_address_in_use(db, var_dir, monkeypatch):
    monkeypatch.delenv("LEARNCREDITS_BASE_URL", raising=False)
    out = io.StringIO()
    call_command("demo", "--port", "8123", stdout=out)
    path = var_dir / "demo-credentials.txt"
    saved = path.read_text()
    assert "{" not in saved and "}" not in saved, saved
    assert "http://127.0.0.1:8123/login" in saved
    assert "http://127.0.0.1:8123/api/v1/docs" in saved

    # Run again on another port: the file and what is printed name the new address only.
    again = io.StringIO()
    call_command("demo", "--port", "9456", stdout=again)
    for text in (again.getvalue(), path.read_text()):
        assert "http://127.0.0.1:9456/login" in text
        assert ":8123" not in text
    assert KEY_LINE.search(again.getvalue()).group(1) in saved


def test_the_listen_address_names_the_server_people_reach():
    from learncredits.ops.listen import listen_url

    assert listen_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert listen_url("::1", 8001) == "http://[::1]:8001"
    wildcard = listen_url("0.0.0.0", 8002)
    assert wildcard.endswith(":8002") and "0.0.0.0" not in wildcard


def test_demo_ledger_is_consistent(db, var_dir):
    run_demo()

    out = io.StringIO()
    call_command("verify_ledger", stdout=out)

    assert "1 orgs checked" in out.getvalue()


def test_demo_run_again_creates_nothing_new(db, var_dir):
    printed = run_demo()
    counts = row_counts()

    again = run_demo()

    assert row_counts() == counts
    assert KEY_LINE.search(again).group(1) == KEY_LINE.search(printed).group(1)


def test_demo_on_a_database_with_orgs_and_no_credentials_creates_nothing(db, var_dir, make_org):
    make_org("Real customer")
    counts = row_counts()

    printed = run_demo()

    assert row_counts() == counts
    assert "no demo created" in printed
    assert not (var_dir / "demo-credentials.txt").exists()


# --- verify_ledger ---------------------------------------------------------------------------


def test_verify_ledger_checks_every_org(make_org, make_content):
    first, second = make_org("First"), make_org("Second")
    make_org("Empty")
    course = make_content(2)
    first.buy(5)
    created = first.assign(course, [first.employee("Ada")])["data"][0]
    ok(first.act(created["id"], "start"))
    second.assign(course, [second.employee("Bob")])

    out = io.StringIO()
    call_command("verify_ledger", stdout=out)

    assert "3 orgs checked" in out.getvalue()


def test_verify_ledger_exits_non_zero_on_a_mismatch(org):
    org.buy(5)
    with around_the_balance_check():
        Balance.objects.filter(org_id=int(org.id.removeprefix("org_"))).update(credits=6)
    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(SystemExit) as exit_info:
        call_command("verify_ledger", stdout=out, stderr=err)

    assert exit_info.value.code == 1
    assert "MISMATCH" in err.getvalue()
    assert f"{org.id}: credits" in err.getvalue()


# --- the console script ----------------------------------------------------------------------


def run_script(args: list[str], cwd: Path, database: Path) -> subprocess.CompletedProcess[str]:
    # The var directory where `make run` puts it.
    env = service_env(f"sqlite:///{database}", LEARNCREDITS_VAR_DIR=str(cwd / "var"))
    return subprocess.run(
        [console_script(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_console_script_lists_our_commands_and_verifies_a_fresh_database(tmp_path):
    database = tmp_path / "cli.sqlite3"
    assert database.is_absolute()

    helped = run_script(["--help"], tmp_path, database)
    assert helped.returncode == 0, helped.stderr
    listed = set(helped.stdout.split())
    assert {"serve", "worker", "verify_ledger", "demo", "migrate"} <= listed

    migrated = run_script(["migrate"], tmp_path, database)
    assert migrated.returncode == 0, migrated.stderr
    assert database.exists()

    verified = run_script(["verify-ledger"], tmp_path, database)
    assert verified.returncode == 0, verified.stderr
    assert "0 orgs checked" in verified.stdout

    demo = run_script(["demo"], tmp_path, database)
    assert demo.returncode == 0, demo.stderr
    assert KEY_LINE.search(demo.stdout)
    assert (tmp_path / "var" / "demo-credentials.txt").exists()

    verified = run_script(["verify-ledger"], tmp_path, database)
    assert verified.returncode == 0, verified.stderr
    assert "1 orgs checked" in verified.stdout


def test_serve_refuses_a_port_already_in_use() -> None:
    """Each web process binds its own socket with SO_REUSEPORT, which would let a second
    server share a port silently; serve checks first and says so instead."""
    import socket

    from django.core.management.base import CommandError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match="already in use"):
            call_command("serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker")
