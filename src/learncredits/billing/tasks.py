"""Background work of billing, run by ``learncredits worker`` (django-tasks, database backend)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import DEFAULT_DB_ALIAS
from django.db.models.signals import pre_save
from django_tasks import task
from django_tasks_db.backend import DatabaseBackend
from django_tasks_db.compat import normalize_json, task_enqueued

from learncredits.billing import auto_top_up, purchases, refunds
from learncredits.billing.collection import collect_invoice, retry_due_collections
from learncredits.billing.invoicing import auto_close_due
from learncredits.billing.models import Invoice
from learncredits.credits.models import Event

# Who the audit trail names for what the worker does on its own (the month-end close).
WORKER_ACTOR = "system:worker"


@task()
def collect_invoice_task(invoice_id: int) -> str:
    return collect_invoice(invoice_id)


class _EnqueueCollection:
    """After a monthly invoice is committed, charge it in the background.

    ``enqueue_collection(invoice)`` enqueues one; ``enqueue_collection.many(invoices)`` a
    committed batch of a month-end close (``invoicing.close_all`` uses it when the hook it
    is given has it): one INSERT for the batch instead of one ORM save per invoice, which
    was about a third of the close's time. The rows are the ones the database backend's
    own ``enqueue`` writes (the test suite compares them field by field), and the
    ``task_enqueued`` signal is sent for each, as ``enqueue`` does. With any other backend
    each invoice is simply enqueued.
    """

    __name__ = "enqueue_collection"

    def __call__(self, invoice: Invoice) -> None:
        if invoice.kind == Invoice.Kind.MONTHLY:
            collect_invoice_task.enqueue(invoice.pk)

    def many(self, invoices: Iterable[Invoice]) -> None:
        from django_tasks_db.models import DBTaskResult

        ids = [invoice.pk for invoice in invoices if invoice.kind == Invoice.Kind.MONTHLY]
        backend = collect_invoice_task.get_backend()
        if not ids:
            return
        if not isinstance(backend, DatabaseBackend):
            for invoice_id in ids:
                collect_invoice_task.enqueue(invoice_id)
            return
        backend.validate_task(collect_invoice_task)
        rows = [
            DBTaskResult(
                id=backend._get_id(),
                args_kwargs=normalize_json({"args": (invoice_id,), "kwargs": {}}),
                priority=collect_invoice_task.priority,
                task_path=collect_invoice_task.module_path,
                queue_name=collect_invoice_task.queue_name,
                run_after=collect_invoice_task.run_after,
                backend_name=backend.alias,
            )
            for invoice_id in ids
        ]
        for row in rows:  # bulk_create sends no pre_save; the backend fills run_after in one
            pre_save.send(
                DBTaskResult, instance=row, raw=False, using=DEFAULT_DB_ALIAS, update_fields=None
            )
        DBTaskResult.objects.bulk_create(rows)
        for row in rows:
            task_enqueued.send(type(backend), task_result=row.task_result)


enqueue_collection = _EnqueueCollection()


@task()
def billing_tick() -> dict[str, int]:
    """Periodic: close each org's month once it has ended, retry declined charges, and settle
    purchases a crash or a lost webhook left pending."""
    issued = auto_close_due(on_issue=enqueue_collection, actor=WORKER_ACTOR)
    retried = retry_due_collections()
    topped_up = auto_top_up.run_due()
    reconciled = purchases.reconcile_pending()
    refunds.resume_pending_refunds()
    return {
        "invoices_issued": issued,
        "collections_retried": retried,
        "auto_top_ups": topped_up,
        "purchases_reconciled": sum(reconciled.values()) - reconciled["waiting"],
    }


@task()
def auto_top_up_task(org_id: int) -> str:
    return auto_top_up.run_auto_top_up(org_id)


def enqueue_auto_top_up(event: Event) -> None:
    """The worker's reaction to ``auto_top_up.due`` (registered in billing/apps.py): queue
    the run. It is called while the outbox is drained, after the balance write committed and
    in the transaction that marks the event dispatched, so the task is queued exactly when
    the event is consumed; the run itself buys outside any transaction."""
    auto_top_up_task.enqueue(event.org_id)
