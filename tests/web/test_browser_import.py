"""Importing employees from a CSV file in a real browser: a file with a bad row imports
nothing and the page lists the bad rows by line, keeping the form filled in; the admin ticks
"import the valid rows and skip the others" and sends it again."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from learncredits.tenancy.models import Employee
from tests.conftest import OrgHandle
from tests.web.test_browser import (  # noqa: F401  (fixtures, found by pytest by name)
    Visitor,
    _flushable,
    _quick_passwords,
    admin_of,
    browse,
    chromium,
    hire,
)

with contextlib.suppress(ImportError):  # without it, the browser marker skips, saying why
    from playwright.sync_api import expect

PEOPLE = (
    b"name,email\n"
    b"Grace Hopper,grace@acme.example\n"
    b"Alan Turing,alan@acme\n"
    b"Barbara Liskov,barbara@acme.example\n"
    b"Ada Lovelace,ada@acme.example\n"
)


def answered(visitor: Visitor, status: int) -> None:
    """The page was answered with this status on purpose (a refused import answers 422);
    Chromium logs it as a console error, which is expected here only."""
    expected = f"the server responded with a status of {status}"
    left = [p for p in visitor.problems if expected not in p]
    assert len(left) < len(visitor.problems), f"no {status} answer: {visitor.problems}"
    visitor.problems[:] = left


def org_emails(org: OrgHandle) -> list[str]:
    return sorted(
        Employee.objects.filter(org_id=int(org.id.split("_")[1])).values_list("email", flat=True)
    )


@pytest.mark.browser
def test_an_admin_sees_every_bad_row_then_imports_the_valid_ones(
    browse: Callable[..., Visitor],  # noqa: F811  (the fixture imported above)
    make_org: Callable[..., OrgHandle],
) -> None:
    org = make_org("Acme")
    hire(org, "Ada Lovelace")
    alice = browse()
    alice.sign_in(admin_of(org))
    alice.open("/employees")
    page = alice.page

    page.get_by_label("or a file").set_input_files(
        {"name": "people.csv", "mimeType": "text/csv", "buffer": PEOPLE}
    )
    page.get_by_test_id("employee-import").click()
    page.wait_for_load_state("load")
    answered(alice, 422)
    alice.at("/employees")
    problems = page.get_by_test_id("import-problems").get_by_role("listitem")
    expect(problems).to_have_text(
        [
            "Line 3: malformed email 'alan@acme'",
            "Line 5: ada@acme.example is already an employee",
        ]
    )
    expect(page.get_by_test_id("import-error")).to_contain_text("Nothing was imported")
    assert org_emails(org) == ["ada@acme.example"]
    # The form is kept: the file's rows are in the text box, ready to send again.
    expect(page.get_by_label("Rows of")).to_have_value(PEOPLE.decode())
    expect(page.get_by_test_id("import-skip-invalid")).not_to_be_checked()
    alice.shot("employees-import-problems")

    page.get_by_test_id("import-skip-invalid").check()
    page.get_by_test_id("employee-import").click()
    page.wait_for_load_state("load")
    expect(alice.message().filter(has_text="Imported")).to_have_text("Imported 2 employees")
    expect(page.get_by_test_id("import-skipped").get_by_role("listitem")).to_have_text(
        [
            "Line 3: malformed email 'alan@acme'",
            "Line 5: ada@acme.example is already an employee",
        ]
    )
    rows = page.get_by_test_id("employee-row")
    expect(rows).to_have_count(3)
    expect(rows.filter(has_text="barbara@acme.example")).to_have_count(1)
    assert org_emails(org) == ["ada@acme.example", "barbara@acme.example", "grace@acme.example"]
    alice.assert_clean()
