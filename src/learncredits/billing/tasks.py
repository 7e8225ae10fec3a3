"""Background work of billing, run by ``learncredits worker`` (django-tasks, database backend)."""

from __future__ import annotations

from django_tasks import task

from learncredits.billing import auto_top_up
from learncredits.billing.collection import collect_invoice, retry_due_collections
from learncredits.billing.invoicing import auto_close_due
from learncredits.billing.models import Invoice


@task()
def collect_invoice_task(invoice_id: int) -> str:
    return collect_invoice(invoice_id)


def enqueue_collection(invoice: Invoice) -> None:
    """After a monthly invoice is committed, charge it in the background."""
    if invoice.kind == Invoice.Kind.MONTHLY:
        collect_invoice_task.enqueue(invoice.pk)


@task()
def billing_tick() -> dict[str, int]:
    """Periodic: close each org's month once it has ended, and retry declined charges."""
    issued = auto_close_due(on_issue=enqueue_collection)
    retried = retry_due_collections()
    topped_up = auto_top_up.run_due()
    return {"invoices_issued": issued, "collections_retried": retried, "auto_top_ups": topped_up}


@task()
def auto_top_up_task(org_id: int) -> str:
    return auto_top_up.run_auto_top_up(org_id)
