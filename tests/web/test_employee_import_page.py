"""The employees page's CSV import: a file with a bad row imports nothing and the page lists
every bad row by line, keeping the form; ticking "import the valid rows" imports those and
lists the skipped ones; a clean file says exactly how many were imported. Both databases."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from learncredits.audit.models import AuditEvent
from learncredits.credits.models import Event
from learncredits.tenancy.models import Employee
from tests.conftest import OrgHandle, signed_in

pytestmark = pytest.mark.django_db


def org_pk(org: OrgHandle) -> int:
    return int(org.id.split("_")[1])


def written(org: OrgHandle) -> tuple[int, int, int]:
    """The org's employees, audit rows and outbox events: what an import could write."""
    return (
        Employee.objects.filter(org_id=org_pk(org)).count(),
        AuditEvent.objects.filter(org_id=org_pk(org)).count(),
        Event.objects.filter(org_id=org_pk(org)).count(),
    )


def listed(html: str, testid: str) -> list[str]:
    block = re.search(rf'<ul[^>]*data-testid="{testid}"[^>]*>(.*?)</ul>', html, re.S)
    assert block is not None, f"no {testid} list"
    return [unescape(item) for item in re.findall(r"<li>(.*?)</li>", block.group(1), re.S)]


def upload(content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile("people.csv", content, content_type="text/csv")


BAD_FILE = (
    b"Name,Email\n"
    b"Ada Lovelace,ada@example.com\n"
    b"Grace Hopper,grace@example\n"
    b"Alan Turing\n"
    b"Barbara Liskov,barbara@example.com\n"
)


def test_a_file_with_bad_rows_imports_nothing_and_lists_every_bad_row(org: OrgHandle):
    admin = signed_in(org)
    before = written(org)
    response = admin.post("/employees", {"csv_file": upload(BAD_FILE)})
    assert response.status_code == 422
    html = response.content.decode()
    assert listed(html, "import-problems") == [
        "Line 3: malformed email 'grace@example'",
        "Line 4: missing email (the row has only one column)",
    ]
    assert "Nothing was imported: 2 rows of the file cannot be imported." in html
    assert written(org) == before
    # The form is kept, its text filled in, the skip box not ticked.
    assert "Barbara Liskov,barbara@example.com" in unescape(html)
    assert re.search(r'name="skip_invalid" value="1" data-testid="import-skip-invalid">', html)


def test_ticking_skip_imports_the_valid_rows_and_lists_the_skipped(org: OrgHandle):
    admin = signed_in(org)
    employees, audits, events = written(org)
    response = admin.post("/employees", {"csv": BAD_FILE.decode(), "skip_invalid": "1"})
    assert response.status_code == 200
    html = unescape(response.content.decode())
    assert "Imported 2 employees" in html
    assert listed(html, "import-skipped") == [
        "Line 3: malformed email 'grace@example'",
        "Line 4: missing email (the row has only one column)",
    ]
    assert written(org) == (employees + 2, audits + 2, events)
    assert sorted(Employee.objects.filter(org_id=org_pk(org)).values_list("name", "email")) == [
        ("Ada Lovelace", "ada@example.com"),
        ("Barbara Liskov", "barbara@example.com"),
    ]


def test_a_clean_file_is_imported_and_the_page_says_how_many(org: OrgHandle):
    admin = signed_in(org)
    employees, audits, _ = written(org)
    response = admin.post(
        "/employees", {"csv_file": upload(b"email,name\nada@example.com,Ada Lovelace\n")}
    )
    assert response.status_code == 302
    page = admin.get(response["Location"]).content.decode()
    messages = re.findall(r'<li class="success"[^>]*>(.*?)</li>', page)
    assert messages == ["Imported 1 employee"]
    assert written(org)[:2] == (employees + 1, audits + 1)
    assert "ada@example.com" in page


def test_rows_already_employees_are_reported_not_imported_twice(org: OrgHandle):
    admin = signed_in(org)
    org.employee("Ada Lovelace", "ada@example.com")
    before = written(org)
    response = admin.post("/employees", {"csv": "Ada,ADA@example.com\r\nAda,ada@example.com\r\n"})
    assert response.status_code == 422
    assert listed(response.content.decode(), "import-problems") == [
        "Line 1: ada@example.com is already an employee",
        "Line 2: ada@example.com is already on line 1",
    ]
    assert written(org) == before


def test_a_file_that_is_not_utf8_is_reported_and_not_put_back_in_the_form(org: OrgHandle):
    admin = signed_in(org)
    before = written(org)
    response = admin.post(
        "/employees", {"csv_file": upload(b"Ada,ada@example.com\nJos\xe9,jose@example.com\n")}
    )
    assert response.status_code == 422
    html = response.content.decode()
    assert listed(html, "import-problems") == [
        "Line 2: not UTF-8 text (save the file as CSV UTF-8)"
    ]
    assert re.search(r'<textarea id="csv"[^>]*></textarea>', html)
    assert written(org) == before


def test_a_file_too_large_is_refused_without_reading_it_all(org: OrgHandle):
    admin = signed_in(org)
    before = written(org)
    response = admin.post("/employees", {"csv_file": upload(b"Ada,ada@example.com\n" * 60_000)})
    assert response.status_code == 422
    assert listed(response.content.decode(), "import-problems") == [
        "The file is larger than 1,024 KiB: split it into smaller files."
    ]
    assert written(org) == before


@pytest.mark.parametrize("role", ["billing", "manager"])
def test_other_roles_cannot_import(org: OrgHandle, role: str):
    client = signed_in(org, role)
    before = written(org)
    response = client.post("/employees", {"csv": "Ada,ada@example.com\n"})
    assert response.status_code == 403
    assert written(org) == before
