"""The migrations match the models, and changing indexes kept the ledger append-only."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction

from learncredits.credits.models import LedgerEntry


@pytest.mark.django_db
def test_no_model_change_is_missing_a_migration() -> None:
    out = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
    except SystemExit:  # pragma: no cover - the failure being tested for
        pytest.fail(f"models and migrations differ:\n{out.getvalue()}")


@pytest.mark.django_db
def test_ledger_indexes_are_the_lean_ones_and_its_triggers_survive(org) -> None:
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, LedgerEntry._meta.db_table)
    names = {name for name, info in indexes.items() if info["index"] and not info["primary_key"]}
    assert {"ledger_org_id", "ledger_org_created", "ledger_purchase", "ledger_lot"} <= names
    single_org = [n for n, i in indexes.items() if i["index"] and i["columns"] == ["org_id"]]
    assert single_org == []  # covered by the composite indexes that start with org_id
    org.buy(5)
    with pytest.raises((IntegrityError, DatabaseError)), transaction.atomic():
        LedgerEntry.objects.update(reason="rewritten")


def _unique_column_sets(model: type) -> list[list[str]]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return [
        info["columns"] for info in found.values() if info["unique"] and not info["primary_key"]
    ]


@pytest.mark.django_db
def test_billing_uniques_start_with_the_org_and_the_invoice_triggers_survive(org) -> None:
    """Invoice numbers and billed ledger entries are unique per org (what a table distributed
    by org can enforce, docs/scaling.md); the migration that made them so rebuilt both
    tables on SQLite and put their append-only triggers back."""
    from learncredits.billing.models import Invoice, InvoiceLine

    assert ["org_id", "number"] in _unique_column_sets(Invoice)
    assert ["number"] not in _unique_column_sets(Invoice)
    assert ["org_id", "ledger_entry_id"] in _unique_column_sets(InvoiceLine)
    assert ["ledger_entry_id"] not in _unique_column_sets(InvoiceLine)

    org.buy(5)
    receipt = Invoice.objects.get(kind="purchase")
    rewrites = [
        lambda: Invoice.objects.update(buyer_name="rewritten"),
        lambda: InvoiceLine.objects.update(description="rewritten"),
    ]
    for rewrite in rewrites:
        with (
            pytest.raises((IntegrityError, DatabaseError), match="append-only"),
            transaction.atomic(),
        ):
            rewrite()

    entry = LedgerEntry.objects.filter(org_id=receipt.org_id).first()
    assert entry is not None

    def line(position: int) -> InvoiceLine:
        return InvoiceLine.objects.create(
            org_id=receipt.org_id,
            invoice=receipt,
            position=position,
            description="again",
            quantity=1,
            unit_price_cents=1,
            amount_cents=1,
            ledger_entry=entry,
        )

    with transaction.atomic():
        line(90)
    with pytest.raises(IntegrityError), transaction.atomic():
        line(91)  # the same entry billed twice
    with pytest.raises(IntegrityError), transaction.atomic():
        Invoice.objects.create(
            org_id=receipt.org_id,
            number=receipt.number,
            kind="monthly",
            period=receipt.period,
            total_cents=0,
            buyer_name="Acme",
            buyer_email="billing@example.com",
            due_at=receipt.due_at,
        )


@pytest.mark.django_db
def test_api_key_prefixes_stay_unique_across_orgs_through_their_lookup_table(
    make_org, monkeypatch
) -> None:
    """The keys' own rule is per org (docs/scaling.md); the lookup table keeps a prefix
    unique across orgs, which authentication by prefix needs."""
    from learncredits.tenancy import services
    from learncredits.tenancy.models import ApiKey, ApiKeyPrefix

    assert ["org_id", "prefix"] in _unique_column_sets(ApiKey)
    assert ["prefix"] not in _unique_column_sets(ApiKey)
    first, second = make_org("First"), make_org("Second")
    assert set(ApiKeyPrefix.objects.values_list("prefix", "org_id")) == set(
        ApiKey.objects.values_list("prefix", "org_id")
    )
    assert first.balance()["available"] == second.balance()["available"] == 0

    taken = ApiKey.objects.get(org__name="First").prefix
    monkeypatch.setattr(services.secrets, "token_hex", lambda n: taken)
    with pytest.raises(IntegrityError), transaction.atomic():
        services.create_api_key(ApiKey.objects.get(org__name="Second").org, name="clash")
    assert ApiKey.objects.filter(prefix=taken).count() == 1


# Uniques that stay on their own column, and why (docs/scaling.md, section 4): an account
# belongs to one org, and the accounts stay local to the coordinator with Django's auth.
UNIQUE_WITHOUT_THE_ORG = {("tenancy_membership", ("user_id",))}


@pytest.mark.django_db
def test_every_unique_rule_of_an_org_owned_table_includes_the_org(org) -> None:
    """What a table distributed by org_id (Citus) can enforce: every unique constraint and
    unique index of a table with an ``org`` column includes ``org_id``, partial ones too."""
    from django.apps import apps

    checked: list[str] = []
    offending: list[tuple[str, tuple[str, ...]]] = []
    for model in apps.get_models():
        if not any(f.name == "org" and f.is_relation for f in model._meta.concrete_fields):
            continue
        table = model._meta.db_table
        checked.append(table)
        for columns in _unique_column_sets(model):
            if "org_id" not in columns and (table, tuple(columns)) not in UNIQUE_WITHOUT_THE_ORG:
                offending.append((table, tuple(columns)))
    assert {"billing_invoice", "billing_refund", "credits_creditlot"} <= set(checked)
    assert offending == [], offending


@pytest.mark.django_db
def test_one_receipt_and_one_lot_per_purchase_hold_with_the_org_in_the_rule(org) -> None:
    """The links that were one-to-one still admit one row each: the rule includes the org,
    and a receipt or lot always shares its purchase's org."""
    from learncredits.billing.models import Invoice
    from learncredits.credits.models import CreditLot

    assert ["org_id", "purchase_id"] in _unique_column_sets(Invoice)
    assert ["org_id", "purchase_id"] in _unique_column_sets(CreditLot)
    org.buy(5)
    receipt = Invoice.objects.get(kind="purchase")
    lot = CreditLot.objects.get(purchase=receipt.purchase)
    with pytest.raises(IntegrityError), transaction.atomic():
        Invoice.objects.create(
            org_id=receipt.org_id,
            number=receipt.number + "-2",
            kind="purchase",
            purchase=receipt.purchase,
            period=receipt.period,
            total_cents=0,
            buyer_name="Acme",
            buyer_email="billing@example.com",
            due_at=receipt.due_at,
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditLot.objects.create(
            org_id=lot.org_id,
            kind=lot.kind,
            purchase=lot.purchase,
            quantity=1,
            remaining=1,
            unit_price_cents=lot.unit_price_cents,
        )
