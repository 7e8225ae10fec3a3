"""Consistent bulk data for the benchmarks, written straight into the real tables.

Every org gets the same shape (a ``Layout``): one paid purchase and its lot, employees,
premium assignments of which some were started (reserve then consume entries) and the rest
are still assigned (a reserve entry each), lot draws for every consumed credit (first in,
first out), and overage entries billed at the retail price once the lot is used up. The
ledger's ``credits_after``/``assigned_after`` run in id order, the balance equals the sum
of the ledger, each lot's remainder equals its quantity less its draws: ``verify_ledger``
finds nothing to report (the verify benchmark checks that).

Rows go in with COPY on PostgreSQL (executemany on SQLite). The column lists come from the
Django models, and every column the layout does not set gets the model field's default,
so the generator keeps working when a model gains a column with a default.

Only ``api_token`` is usable without Django; everything else runs inside a configured
Django process (see inproc.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

RETAIL_CENTS = 1000
LOT_UNIT_CENTS = 700


def api_token(org_id: int) -> str:
    """The org API key the generator creates for ``org_id`` (``lc_<prefix>_<secret>``)."""
    return f"lc_{_key_prefix(org_id)}_{_key_secret(org_id)}"


def _key_prefix(org_id: int) -> str:
    return f"bn{org_id:x}"


def _key_secret(org_id: int) -> str:
    return f"benchsecret{org_id}x"


@dataclass
class Layout:
    orgs: int
    open_per_org: int = 0  # assigned, not started: a reserve entry each
    started_per_org: int = 0  # reserve, then consume: paid from the lot, the rest overage
    credit_cost: int = 1
    purchased_per_org: int = 0  # one paid purchase (one lot) of this many credits
    employees_per_org: int = 0  # at least as many as distinct (employee, content) pairs need
    contents: int = 20  # premium items used round robin
    consumed_from: str = ""  # ISO times: consumes spread evenly over [from, to)
    consumed_to: str = ""
    api_keys: bool = False
    actor: str = "bench"


@dataclass
class Generated:
    """Where a layout's rows went: the ids are contiguous per org."""

    first_org_id: int
    orgs: int
    first_employee_id: int
    employees_per_org: int
    content_ids: list[int]
    first_assignment_id: int
    assignments_per_org: int
    started_per_org: int
    open_per_org: int
    ledger_entries: int
    lot_draws: int
    credits_per_org: int
    assigned_per_org: int

    def open_assignment_ids(self, org_index: int) -> range:
        base = self.first_assignment_id + org_index * self.assignments_per_org
        return range(base + self.started_per_org, base + self.assignments_per_org)

    def org_id(self, org_index: int) -> int:
        return self.first_org_id + org_index

    def employee_ids(self, org_index: int) -> range:
        base = self.first_employee_id + org_index * self.employees_per_org
        return range(base, base + self.employees_per_org)


# --- writing rows ------------------------------------------------------------------------------


class _Table:
    """The rows of one model: the columns the layout sets, then every other column at its
    model default (computed once)."""

    def __init__(self, model: Any, provided: Sequence[str], vendor: str, connection: Any) -> None:
        self.model = model
        self.vendor = vendor
        fields = {f.attname: f for f in model._meta.concrete_fields}
        self.provided = [fields[name] for name in provided]
        unknown = set(provided) - set(fields)
        assert not unknown, f"{model.__name__} has no {unknown}"
        # every other column at its default; an auto-increment key left out is numbered
        # by the database
        self.rest = [
            f
            for name, f in fields.items()
            if name not in provided
            and not (f.primary_key and f.get_internal_type() in ("AutoField", "BigAutoField"))
        ]
        self.columns = [f.column for f in self.provided + self.rest]
        rest_values = []
        for f in self.rest:
            if f.has_default():
                value = f.get_db_prep_save(f.get_default(), connection)
            elif f.null:
                value = None
            else:
                raise RuntimeError(
                    f"bench/datagen.py: {model.__name__}.{f.name} is NOT NULL without a "
                    "default; give it a value in the layout"
                )
            rest_values.append(value)
        self.rest_values = tuple(_sqlite_value(v, connection) for v in rest_values)
        self.rest_text = "".join("\t" + _text(_plain(v)) for v in rest_values)
        self.rows = 0


def _plain(value: Any) -> Any:
    # get_db_prep_save may wrap values (JSON adapters); unwrap what we know
    obj = getattr(value, "obj", None)
    if obj is not None and not isinstance(value, str | int | float | bool | datetime):
        import json

        return json.dumps(obj)
    return value


def _escape(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        text = text.replace("\r", "\\r")
    return text


_ISO: dict[datetime, str] = {}


def _iso(value: datetime) -> str:
    text = _ISO.get(value)
    if text is None:
        if len(_ISO) > 100_000:
            _ISO.clear()
        text = _ISO[value] = value.isoformat()
    return text


# One value in PostgreSQL's COPY text format, by type (the COPY path's inner loop).
_FORMAT: dict[type, Callable[[Any], str]] = {
    int: str,
    str: _escape,
    type(None): lambda _: "\\N",
    bool: lambda v: "t" if v else "f",
    datetime: _iso,
    float: repr,
}


def _text(value: Any) -> str:
    formatter = _FORMAT.get(type(value))
    return formatter(value) if formatter else _escape(str(value))


def _sqlite_value(value: Any, connection: Any) -> Any:
    if connection.vendor == "sqlite" and isinstance(value, datetime):
        return connection.ops.adapt_datetimefield_value(value)
    return value


class Writer:
    """Streams rows into tables: COPY on PostgreSQL, executemany on SQLite."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.vendor = connection.vendor
        self.tables: dict[str, _Table] = {}

    def table(self, model: Any, provided: Sequence[str]) -> _Table:
        key = model._meta.db_table
        if key not in self.tables:
            self.tables[key] = _Table(model, provided, self.vendor, self.connection)
        return self.tables[key]

    def write(self, model: Any, provided: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> int:
        table = self.table(model, provided)
        count = 0
        with self.connection.cursor() as cursor:
            if self.vendor == "postgresql":
                columns = ", ".join(f'"{c}"' for c in table.columns)
                copy_sql = f'COPY "{model._meta.db_table}" ({columns}) FROM STDIN'
                fmt = _FORMAT
                with cursor.cursor.copy(copy_sql) as copy:
                    buffer: list[str] = []
                    suffix = table.rest_text + "\n"
                    for row in rows:
                        buffer.append("\t".join([fmt.get(type(v), _text)(v) for v in row]) + suffix)
                        count += 1
                        if len(buffer) >= 20000:
                            copy.write("".join(buffer))
                            buffer.clear()
                    if buffer:
                        copy.write("".join(buffer))
            else:
                columns = ", ".join(f'"{c}"' for c in table.columns)
                marks = ", ".join("?" for _ in table.columns)
                sql = f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({marks})'
                batch: list[tuple[Any, ...]] = []
                raw = cursor.cursor
                for row in rows:
                    batch.append(
                        tuple(_sqlite_value(v, self.connection) for v in row) + table.rest_values
                    )
                    count += 1
                    if len(batch) >= 5000:
                        raw.executemany(sql, batch)
                        batch.clear()
                if batch:
                    raw.executemany(sql, batch)
        table.rows += count
        return count

    def finish(self) -> None:
        """Advance the id sequences past the rows written, and refresh planner statistics."""
        with self.connection.cursor() as cursor:
            for name, table in self.tables.items():
                pk = table.model._meta.pk
                if self.vendor == "postgresql":
                    if pk.get_internal_type() in ("AutoField", "BigAutoField"):
                        cursor.execute(
                            f"SELECT setval(pg_get_serial_sequence('\"{name}\"', '{pk.column}'), "
                            f'(SELECT coalesce(max("{pk.column}"), 0) + 1 FROM "{name}"), false)'
                        )
                    cursor.execute(f'ANALYZE "{name}"')
            if self.vendor == "sqlite":
                cursor.execute("ANALYZE")


def next_id(model: Any) -> int:
    from django.db.models import Max

    pk = model._meta.pk.attname
    return int(model.objects.aggregate(m=Max(pk))["m"] or 0) + 1


# --- the layout --------------------------------------------------------------------------------


def generate(layout: Layout, writer: Writer, *, now: datetime | None = None) -> Generated:
    """Write one layout's orgs and everything they hold; returns where it went."""
    from learncredits.catalog.models import Content
    from learncredits.credits.models import (
        Assignment,
        Balance,
        CreditLot,
        LedgerEntry,
        LotDraw,
        Purchase,
    )
    from learncredits.tenancy.models import ApiKey, Employee, Organization

    now = now or datetime.now(UTC)
    cost = layout.credit_cost
    started = layout.started_per_org
    total = layout.open_per_org + started
    contents = max(1, layout.contents)
    employees = max(layout.employees_per_org, math.ceil(total / contents) if total else 0)
    q = layout.purchased_per_org
    consumed_from = datetime.fromisoformat(layout.consumed_from) if layout.consumed_from else now
    consumed_to = datetime.fromisoformat(layout.consumed_to) if layout.consumed_to else now
    reserved_at = min(consumed_from, now) - timedelta(days=1)
    purchased_at = reserved_at - timedelta(hours=1)
    created_at = purchased_at - timedelta(days=1)

    first_org = next_id(Organization)
    first_employee = next_id(Employee)
    first_content = next_id(Content)
    first_purchase = next_id(Purchase)
    first_lot = next_id(CreditLot)
    first_assignment = next_id(Assignment)
    first_entry = next_id(LedgerEntry)
    first_draw = next_id(LotDraw)
    first_key = next_id(ApiKey)

    # One org's ledger, computed once: (type, credits_delta, assigned_delta, overage, retail,
    # credits_after, assigned_after, assignment index or None, is purchase, created_at, draw)
    entries: list[tuple[Any, ...]] = []
    credits = assigned = 0
    if q:
        credits = q
        entries.append(("purchase", q, 0, 0, None, credits, 0, None, True, purchased_at, 0))
    for p in range(total):
        assigned += cost
        at = reserved_at + timedelta(milliseconds=p)
        entries.append(("reserve", 0, cost, 0, None, credits, assigned, p, False, at, 0))
    splits: list[tuple[int, int, datetime]] = []  # per started assignment
    span = (consumed_to - consumed_from) / max(1, started)
    for p in range(started):
        from_balance = min(cost, credits)
        overage = cost - from_balance
        credits -= from_balance
        assigned -= cost
        at = consumed_from + span * p + span / 2
        splits.append((from_balance, overage, at))
        retail = RETAIL_CENTS if overage else None
        entries.append(
            (
                "consume",
                -from_balance,
                -cost,
                overage,
                retail,
                credits,
                assigned,
                p,
                False,
                at,
                from_balance,
            )
        )
    draws_per_org = sum(1 for e in entries if e[10])
    lot_remaining = q - sum(s[0] for s in splits)
    at_risk = assigned > 0 and credits - assigned <= 0

    n = layout.orgs
    org_ids = range(first_org, first_org + n)
    writer.write(
        Organization,
        ["id", "name", "billing_email", "timezone", "alert_threshold", "created_at"],
        (
            (org, f"Bench org {org}", f"billing+{org}@bench.example", "UTC", 0, created_at)
            for org in org_ids
        ),
    )
    balance_fields = {f.attname for f in Balance._meta.concrete_fields}
    if "at_risk" in balance_fields:
        writer.write(
            Balance,
            ["org_id", "credits", "assigned", "at_risk"],
            ((org, credits, assigned, at_risk) for org in org_ids),
        )
    else:
        writer.write(
            Balance,
            ["org_id", "credits", "assigned"],
            ((org, credits, assigned) for org in org_ids),
        )
    content_ids = list(range(first_content, first_content + contents))
    writer.write(
        Content,
        ["id", "title", "premium", "credit_cost", "created_at"],
        ((c, f"Bench course {c}", True, cost, created_at) for c in content_ids),
    )
    writer.write(
        Employee,
        ["id", "org_id", "name", "email", "active", "created_at"],
        (
            (
                first_employee + i * employees + e,
                org,
                f"Employee {e}",
                f"e{e}@org{org}.example",
                True,
                created_at,
            )
            for i, org in enumerate(org_ids)
            for e in range(employees)
        ),
    )
    if layout.api_keys:
        writer.write(
            ApiKey,
            ["id", "org_id", "name", "prefix", "secret_hash", "created_at"],
            (
                (
                    first_key + i,
                    org,
                    "bench",
                    _key_prefix(org),
                    hashlib.sha256(_key_secret(org).encode()).hexdigest(),
                    created_at,
                )
                for i, org in enumerate(org_ids)
            ),
        )
    if q:
        writer.write(
            Purchase,
            [
                "id",
                "org_id",
                "quantity",
                "unit_price_cents",
                "total_cents",
                "retail_unit_price_cents",
                "currency",
                "status",
                "provider",
                "provider_reference",
                "actor",
                "created_at",
                "paid_at",
            ],
            (
                (
                    first_purchase + i,
                    org,
                    q,
                    LOT_UNIT_CENTS,
                    q * LOT_UNIT_CENTS,
                    RETAIL_CENTS,
                    "USD",
                    "paid",
                    "test",
                    f"bench-{org}",
                    layout.actor,
                    purchased_at,
                    purchased_at,
                )
                for i, org in enumerate(org_ids)
            ),
        )
        writer.write(
            CreditLot,
            [
                "id",
                "org_id",
                "kind",
                "purchase_id",
                "quantity",
                "remaining",
                "unit_price_cents",
                "created_at",
            ],
            (
                (
                    first_lot + i,
                    org,
                    "purchase",
                    first_purchase + i,
                    q,
                    lot_remaining,
                    LOT_UNIT_CENTS,
                    purchased_at,
                )
                for i, org in enumerate(org_ids)
            ),
        )

    def assignment_rows() -> Iterable[tuple[Any, ...]]:
        for i, org in enumerate(org_ids):
            base = first_assignment + i * total
            emp = first_employee + i * employees
            for p in range(total):
                content = first_content + p // employees
                employee = emp + p % employees
                if p < started:
                    fb, over, at = splits[p]
                    yield (
                        base + p,
                        org,
                        content,
                        employee,
                        "started",
                        cost,
                        fb,
                        over,
                        reserved_at,
                        at,
                    )
                else:
                    yield (
                        base + p,
                        org,
                        content,
                        employee,
                        "assigned",
                        cost,
                        0,
                        0,
                        reserved_at,
                        None,
                    )

    writer.write(
        Assignment,
        [
            "id",
            "org_id",
            "content_id",
            "employee_id",
            "status",
            "credit_cost",
            "charged_credits",
            "overage_credits",
            "created_at",
            "started_at",
        ],
        assignment_rows(),
    )

    per_org = len(entries)
    actor = layout.actor

    def entry_rows() -> Iterable[tuple[Any, ...]]:
        for i, org in enumerate(org_ids):
            base = first_entry + i * per_org
            asg = first_assignment + i * total
            purchase = first_purchase + i
            lot = first_lot + i
            for k, e in enumerate(entries):
                kind, cd, ad, over, retail, ca, aa, p, is_purchase, at, _ = e
                yield (
                    base + k,
                    org,
                    kind,
                    cd,
                    ad,
                    over,
                    retail,
                    ca,
                    aa,
                    None if p is None else asg + p,
                    purchase if is_purchase else None,
                    lot if is_purchase else None,
                    actor,
                    "",
                    at,
                )

    writer.write(
        LedgerEntry,
        [
            "id",
            "org_id",
            "type",
            "credits_delta",
            "assigned_delta",
            "overage_credits",
            "retail_unit_price_cents",
            "credits_after",
            "assigned_after",
            "assignment_id",
            "purchase_id",
            "lot_id",
            "actor",
            "reason",
            "created_at",
        ],
        entry_rows(),
    )

    draw_entries = [(k, e[10]) for k, e in enumerate(entries) if e[10]]

    def draw_rows() -> Iterable[tuple[Any, ...]]:
        for i, org in enumerate(org_ids):
            base = first_entry + i * per_org
            lot = first_lot + i
            draw = first_draw + i * draws_per_org
            for j, (k, quantity) in enumerate(draw_entries):
                yield (draw + j, org, base + k, lot, quantity)

    if draw_entries:
        writer.write(LotDraw, ["id", "org_id", "entry_id", "lot_id", "quantity"], draw_rows())

    return Generated(
        first_org_id=first_org,
        orgs=n,
        first_employee_id=first_employee,
        employees_per_org=employees,
        content_ids=content_ids,
        first_assignment_id=first_assignment,
        assignments_per_org=total,
        started_per_org=started,
        open_per_org=layout.open_per_org,
        ledger_entries=per_org * n,
        lot_draws=draws_per_org * n,
        credits_per_org=credits,
        assigned_per_org=assigned,
    )


def generate_all(
    layouts: Sequence[Layout], progress: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Write several layouts in one transaction; returns each one's ``Generated`` as a dict."""
    from django.db import connection, transaction

    out = []
    with transaction.atomic():
        writer = Writer(connection)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                if cursor.fetchone()[0]:
                    # Bulk load: skip the per-row foreign-key triggers (the rows are
                    # consistent by construction; the benchmarks' checks would show it).
                    cursor.execute("SET LOCAL session_replication_role = replica")
        for layout in layouts:
            generated = generate(layout, writer)
            out.append(asdict(generated))
            if progress:
                progress(f"{layout.orgs} orgs, {generated.ledger_entries} ledger entries")
    writer.finish()
    return out
