"""Importing employees from a CSV file of ``name,email`` rows.

The whole file is read and checked before anything is written, so an admin sees every bad
row at once (its line number and what is wrong with it) instead of a file half imported:
a file with a bad row imports nothing, unless the admin asks for the valid rows to be
imported and the others skipped. Either way the rows that are imported are imported in one
transaction, each audited as ``employee.create`` like an employee added by hand.

``parse`` is the file's rules alone (no database): encoding, columns, names, emails,
duplicates within the file, the size bounds. ``import_employees`` adds the one rule that
needs the org (an email that is already one of its employees) and writes. The dashboard's
employees page calls it; the API has no import route (it adds employees one by one).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from learncredits.domain.errors import ValidationFailed
from learncredits.tenancy import services
from learncredits.tenancy.models import Employee, Organization

# The same bounds as the API's: a request body of at most 1 MiB, at most 10,000 employees
# at once (a bulk assign's limit too).
MAX_BYTES = 1024 * 1024
MAX_ROWS = 10_000
NAME_MAX = Employee._meta.get_field("name").max_length or 200
EMAIL_MAX = Employee._meta.get_field("email").max_length or 254
HEADER = ("name", "email")
_QUERY_CHUNK = 1_000


@dataclass(frozen=True)
class Problem:
    """Why one row (or, with no line, the whole file) cannot be imported. ``code`` is
    stable, for tests and tools; ``message`` is for people."""

    line: int | None
    code: str
    message: str

    def __str__(self) -> str:
        return self.message if self.line is None else f"Line {self.line}: {self.message}"


@dataclass(frozen=True)
class Row:
    line: int
    name: str
    email: str


@dataclass(frozen=True)
class Parsed:
    """What the file holds: the rows that pass the file's rules, and every problem.
    ``refused`` is a problem with the file itself (too large, unreadable, empty): then no
    row can be imported, whatever the admin asks."""

    rows: list[Row]
    problems: list[Problem]
    refused: bool = False


@dataclass(frozen=True)
class Imported:
    """The employees made, and the bad rows skipped (empty unless the admin asked to skip)."""

    employees: list[Employee]
    skipped: list[Problem]


class ImportRefused(ValidationFailed):
    """Nothing was imported; ``problems`` lists every bad row (or what is wrong with the
    file)."""

    def __init__(self, detail: str, problems: list[Problem]) -> None:
        super().__init__(detail, problems=[str(p) for p in problems])
        self.problems = problems


def _file_problem(code: str, message: str, line: int | None = None) -> Parsed:
    return Parsed(rows=[], problems=[Problem(line, code, message)], refused=True)


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the line it starts on (a quoted field may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    for record in reader:
        yield start, record
        start = reader.line_num + 1


def _header(cells: list[str]) -> tuple[int, int] | None:
    """The columns of name and email if this row is the header (in any case and order)."""
    labels = [cell.strip().lower() for cell in cells]
    if sorted(labels) == sorted(HEADER):
        return labels.index("name"), labels.index("email")
    return None


def _check_row(line: int, cells: list[str], columns: tuple[int, int]) -> list[Problem]:
    """The problems of one data row (trailing empty cells, as spreadsheets write, aside)."""
    if any("\udc80" <= ch <= "\udcff" for cell in cells for ch in cell):
        return [Problem(line, "not_utf8", "not UTF-8 text (save the file as CSV UTF-8)")]
    while len(cells) > 2 and not cells[-1].strip():
        cells = cells[:-1]
    if len(cells) > 2:
        return [
            Problem(
                line,
                "too_many_columns",
                f"too many columns: {len(cells)}, expected 2 (name,email)",
            )
        ]
    if len(cells) == 1:
        if "@" in cells[0]:
            return [Problem(line, "empty_name", "empty name (the row has only an email)")]
        return [Problem(line, "missing_email", "missing email (the row has only one column)")]
    name = cells[columns[0]].strip()
    email = cells[columns[1]].strip()
    problems = []
    if not name:
        problems.append(Problem(line, "empty_name", "empty name"))
    elif len(name) > NAME_MAX:
        problems.append(Problem(line, "name_too_long", f"name longer than {NAME_MAX} characters"))
    if not email:
        problems.append(Problem(line, "missing_email", "missing email"))
    elif len(email) > EMAIL_MAX:
        problems.append(
            Problem(line, "email_too_long", f"email longer than {EMAIL_MAX} characters")
        )
    else:
        try:
            services.clean_email(email)
        except ValidationFailed:
            problems.append(Problem(line, "malformed_email", f"malformed email {email!r}"))
    return problems


def parse(data: bytes) -> Parsed:
    """The file's rows and problems, by the file's own rules (no database).

    The bytes are read as UTF-8 (a byte-order mark, as Excel writes, is allowed); a row
    with bytes that are not UTF-8 is a bad row, the others are read as usual. Blank lines
    are ignored. The first row is a header when it is ``name`` and ``email`` in any case and
    order, and then says which column is which; otherwise the columns are name, email."""
    if len(data) > MAX_BYTES:
        return _file_problem(
            "file_too_large",
            f"The file is larger than {MAX_BYTES // 1024:,} KiB: split it into smaller files.",
        )
    # Undecodable bytes become lone surrogates, so the CSV reader keeps its line count and
    # the row that holds them is named (see _check_row).
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    rows: list[Row] = []
    problems: list[Problem] = []
    columns = (0, 1)
    first_line_of: dict[str, int] = {}
    seen_first = False
    count = 0
    try:
        for line, cells in _records(text):
            if not any(cell.strip() for cell in cells):
                continue
            if not seen_first:
                seen_first = True
                header = _header(cells)
                if header is not None:
                    columns = header
                    continue
            count += 1
            if count > MAX_ROWS:
                return _file_problem(
                    "too_many_rows",
                    f"The file has more than {MAX_ROWS:,} rows: split it into smaller files.",
                )
            found = _check_row(line, cells, columns)
            if found:
                problems.extend(found)
                continue
            name, email = cells[columns[0]].strip(), cells[columns[1]].strip().lower()
            if email in first_line_of:
                problems.append(
                    Problem(
                        line,
                        "duplicate_in_file",
                        f"{email} is already on line {first_line_of[email]}",
                    )
                )
                continue
            first_line_of[email] = line
            rows.append(Row(line, name, email))
    except csv.Error as exc:
        return _file_problem("unreadable_csv", f"not a CSV file we can read ({exc})")
    if not rows and not problems:
        return _file_problem("empty", "The file has no rows of name,email to import.")
    return Parsed(rows=rows, problems=problems)


def _already_employees(org: Organization, rows: list[Row]) -> list[Problem]:
    """The rows whose email is already one of the org's employees (active or not)."""
    known: dict[str, bool] = {}
    emails = [row.email for row in rows]
    for start in range(0, len(emails), _QUERY_CHUNK):
        chunk = emails[start : start + _QUERY_CHUNK]
        known.update(
            Employee.objects.filter(org=org, email__in=chunk).values_list("email", "active")
        )
    return [
        Problem(
            row.line,
            "already_employee",
            f"{row.email} is already an employee" + ("" if known[row.email] else " (deactivated)"),
        )
        for row in rows
        if row.email in known
    ]


def import_employees(
    org: Organization, data: bytes, *, actor: str, skip_invalid: bool = False
) -> Imported:
    """Import the file's employees, all or nothing.

    With a bad row, nothing is written and ``ImportRefused`` lists every problem; with
    ``skip_invalid`` the valid rows are imported and the bad ones returned as skipped. A
    problem with the file itself (too large, too many rows, unreadable, empty) refuses it
    either way, as does a file with no valid row at all. The check against the org's
    employees is made inside the transaction that writes, so the report is what the
    write saw; an employee added by someone else in that very moment makes the unique
    constraint refuse the whole import, which the admin can simply try again."""
    parsed = parse(data)
    if parsed.refused:
        raise ImportRefused(parsed.problems[0].message, parsed.problems)
    try:
        with transaction.atomic():
            existing = _already_employees(org, parsed.rows)
            taken = {p.line for p in existing}
            rows = [row for row in parsed.rows if row.line not in taken]
            problems = sorted(parsed.problems + existing, key=lambda p: (p.line or 0, p.code))
            if problems and not skip_invalid:
                raise ImportRefused(_refusal(len({p.line for p in problems})), problems)
            if not rows:
                raise ImportRefused("No row of the file can be imported.", problems)
            employees = Employee.objects.bulk_create(
                [Employee(org=org, name=row.name, email=row.email) for row in rows],
                batch_size=500,
            )
            services.record_employees_created(actor, org, employees, source="csv_import")
    except IntegrityError:
        raise ImportRefused(
            "An employee with one of these emails was added while importing; nothing was "
            "imported. Try again to see which.",
            [],
        ) from None
    return Imported(employees=employees, skipped=problems)


def _refusal(bad_rows: int) -> str:
    rows = "row" if bad_rows == 1 else "rows"
    return f"Nothing was imported: {bad_rows} {rows} of the file cannot be imported."
