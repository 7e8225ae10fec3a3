"""The employee CSV import's rules (tenancy/employee_import.py): every bad row is found with
its line and reason before anything is written, and nothing is imported unless the file is
clean or the admin asks to skip the bad rows. ``parse`` needs no database; the import's own
tests run on both."""

from __future__ import annotations

import pytest

from learncredits.audit.models import AuditEvent
from learncredits.credits.models import Event
from learncredits.tenancy import employee_import
from learncredits.tenancy.employee_import import ImportRefused, import_employees, parse
from learncredits.tenancy.models import Employee, Organization
from tests.conftest import OrgHandle


def problems(data: bytes) -> list[tuple[int | None, str]]:
    return [(p.line, p.code) for p in parse(data).problems]


# Each bad input: the file, and the (line, code) of every problem it must report.
BAD_FILES: list[tuple[str, bytes, list[tuple[int | None, str]]]] = [
    ("missing email", b"Ada Lovelace\n", [(1, "missing_email")]),
    ("blank email", b"Ada Lovelace,  \n", [(1, "missing_email")]),
    ("only an email", b"ada@example.com\n", [(1, "empty_name")]),
    ("empty name", b" ,ada@example.com\n", [(1, "empty_name")]),
    ("malformed email", b"Ada,ada@@example\n", [(1, "malformed_email")]),
    ("no domain", b"Ada,ada\n", [(1, "malformed_email")]),
    ("both bad", b",not-an-email\n", [(1, "empty_name"), (1, "malformed_email")]),
    ("too many columns", b"Ada,ada@example.com,Sales\n", [(1, "too_many_columns")]),
    ("name too long", b"A" * 201 + b",ada@example.com\n", [(1, "name_too_long")]),
    (
        "email too long",
        b"Ada," + b"a" * 64 + b"@" + b"b" * 60 + b"." + b"c" * 60 + b"." + b"d" * 70 + b".com\n",
        [(1, "email_too_long")],
    ),
    (
        "duplicate within the file, in another case",
        b"Ada,ada@example.com\nAda L,ADA@example.com\n",
        [(2, "duplicate_in_file")],
    ),
    ("not UTF-8", b"Ada,ada@example.com\nJos\xe9,jose@example.com\n", [(2, "not_utf8")]),
    (
        "line numbers count the header, blank lines and quoted line breaks",
        b'name,email\n\n"Ada\nLovelace",ada@example.com\nGrace\n',
        [(5, "missing_email")],
    ),
    (
        "a header in another order and case names the columns",
        b"EMAIL,Name\nada@example.com,Ada\nGrace,grace@example.com\n",
        [(3, "malformed_email")],
    ),
    ("a header alone", b"name,email\n", [(None, "empty")]),
    ("an empty file", b"", [(None, "empty")]),
    ("blank lines only", b"\n \n,\n", [(None, "empty")]),
    ("too large", b"Ada,ada@example.com\n" * 60_000, [(None, "file_too_large")]),
    (
        "too many rows",
        b"".join(b"P%d,p%d@example.com\n" % (i, i) for i in range(employee_import.MAX_ROWS + 1)),
        [(None, "too_many_rows")],
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_parse_reports_every_bad_row_with_its_line_and_reason(data, expected):
    assert problems(data) == expected


def test_parse_reports_every_bad_row_of_a_file_not_only_the_first():
    data = (
        b"name,email\n"
        b"Ada,ada@example.com\n"
        b"Grace\n"
        b",x@example.com\n"
        b"Alan,alan@example\n"
        b"Ada again,ada@example.com\n"
        b"Edsger,edsger@example.com,extra\n"
        b"Barbara,barbara@example.com\n"
    )
    parsed = parse(data)
    assert [(p.line, p.code) for p in parsed.problems] == [
        (3, "missing_email"),
        (4, "empty_name"),
        (5, "malformed_email"),
        (6, "duplicate_in_file"),
        (7, "too_many_columns"),
    ]
    assert [str(p) for p in parsed.problems][3] == "Line 6: ada@example.com is already on line 2"
    assert [(r.line, r.name, r.email) for r in parsed.rows] == [
        (2, "Ada", "ada@example.com"),
        (8, "Barbara", "barbara@example.com"),
    ]
    assert not parsed.refused


def test_parse_accepts_a_byte_order_mark_crlf_trailing_empty_cells_and_mixed_case():
    parsed = parse(
        "\ufeffName,E-mail\r\n".replace("E-mail", "Email").encode()
        + ("Zoë Ångström, Zoe@Example.COM ,,\r\n".encode())
    )
    assert parsed.problems == []
    assert [(r.line, r.name, r.email) for r in parsed.rows] == [
        (2, "Zoë Ångström", "zoe@example.com")
    ]


def test_the_bounds_are_the_limits_not_below_them():
    at_limit = b"".join(b"P%d,p%d@example.com\n" % (i, i) for i in range(employee_import.MAX_ROWS))
    assert len(at_limit) <= employee_import.MAX_BYTES
    parsed = parse(at_limit)
    assert (len(parsed.rows), parsed.problems) == (employee_import.MAX_ROWS, [])


# --- the import, on the database --------------------------------------------------------------


def org_of(handle: OrgHandle) -> Organization:
    return Organization.objects.get(pk=int(handle.id.split("_")[1]))


def written(org: Organization) -> tuple[int, int, int]:
    return (
        Employee.objects.filter(org=org).count(),
        AuditEvent.objects.filter(org_id=org.pk).count(),
        Event.objects.filter(org_id=org.pk).count(),
    )


@pytest.mark.django_db
def test_a_file_with_a_bad_row_imports_nothing_and_names_every_problem(org: OrgHandle):
    handle = org
    org_row = org_of(handle)
    handle.employee("Existing", "grace@example.com")
    before = written(org_row)
    data = b"Ada,ada@example.com\nGrace,GRACE@example.com\nAlan,alan@\n"
    with pytest.raises(ImportRefused) as refused:
        import_employees(org_row, data, actor="user:usr_1")
    assert [str(p) for p in refused.value.problems] == [
        "Line 2: grace@example.com is already an employee",
        "Line 3: malformed email 'alan@'",
    ]
    assert refused.value.code == "validation_error"
    assert written(org_row) == before


@pytest.mark.django_db
def test_skipping_imports_the_valid_rows_in_one_go_and_lists_the_skipped(org: OrgHandle):
    org_row = org_of(org)
    before = written(org_row)
    data = b"email,name\nada@example.com,Ada\nbad,Bad\nalan@example.com,Alan\n"
    result = import_employees(org_row, data, actor="user:usr_1", skip_invalid=True)
    assert [(e.name, e.email) for e in result.employees] == [
        ("Ada", "ada@example.com"),
        ("Alan", "alan@example.com"),
    ]
    assert [str(p) for p in result.skipped] == ["Line 3: malformed email 'bad'"]
    employees, audits, events = written(org_row)
    assert (employees, audits, events) == (before[0] + 2, before[1] + 2, before[2])
    created = AuditEvent.objects.filter(org_id=org_row.pk, action="employee.create")
    assert {a.target for a in created} == {f"emp_{e.pk}" for e in result.employees}
    assert {a.actor for a in created} == {"user:usr_1"}


@pytest.mark.django_db
def test_a_deactivated_employee_is_already_an_employee(org: OrgHandle):
    org_row = org_of(org)
    employee_id = org.employee("Gone", "gone@example.com")
    assert org.api.post(org.path(f"/employees/{employee_id}/deactivate")).status == 200
    with pytest.raises(ImportRefused) as refused:
        import_employees(org_row, b"Gone,gone@example.com\n", actor="user:usr_1")
    assert [str(p) for p in refused.value.problems] == [
        "Line 1: gone@example.com is already an employee (deactivated)"
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data",
    [b"", b"Bad\n", b"Ada,ada@example.com\n" * 60_000],
    ids=["empty", "no valid row", "too large"],
)
def test_skipping_cannot_import_a_file_with_nothing_to_import(org: OrgHandle, data: bytes):
    org_row = org_of(org)
    before = written(org_row)
    with pytest.raises(ImportRefused):
        import_employees(org_row, data, actor="user:usr_1", skip_invalid=True)
    assert written(org_row) == before


@pytest.mark.django_db
def test_another_orgs_employee_with_the_same_email_is_no_obstacle(org: OrgHandle, make_org):
    make_org("Elsewhere").employee("Ada", "ada@example.com")
    result = import_employees(org_of(org), b"Ada,ada@example.com\n", actor="user:usr_1")
    assert [e.email for e in result.employees] == ["ada@example.com"]


@pytest.mark.django_db
def test_the_employee_rule_itself_bounds_names_and_emails_to_their_columns(org: OrgHandle) -> None:
    """Whoever calls it (a page, the API, SCIM), a name or email longer than its column is a
    clear ValidationFailed on both databases, and nothing is written."""
    from learncredits.domain.errors import ValidationFailed
    from learncredits.tenancy import services

    the_org = Organization.objects.get(pk=int(org.id.rsplit("_", 1)[1]))
    before = Employee.objects.count()
    with pytest.raises(ValidationFailed, match="name is longer than 200"):
        services.create_employee(the_org, name="A" * 201, email="ada@example.com")
    long_email = "a" * 64 + "@" + ("b" * 62 + ".") * 3 + "com"  # 257 characters
    with pytest.raises(ValidationFailed, match="email is longer than 254"):
        services.create_employee(the_org, name="Ada", email=long_email)
    assert Employee.objects.count() == before
    assert services.create_employee(the_org, name="A" * 200, email="ada@example.com").pk
