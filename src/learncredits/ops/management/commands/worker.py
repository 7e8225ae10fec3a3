"""``learncredits worker``: the background worker.

Three loops: django-tasks' database worker runs queued tasks (collections, auto top-ups);
a scheduler enqueues the periodic billing tick (close each org's month once it has ended,
retry declined charges) every ``--tick`` seconds; and the outbox loop sends due emails and
webhooks every ``--outbox-interval`` seconds and, every ``HOUSEKEEPING_EVERY`` seconds,
purges expired idempotency records and warns about, then releases, assignments nobody started
(credits/aging.py). Every step is idempotent, so running several workers is
harmless.

Started by ``serve``, the worker also leaves when serve dies, even if serve is killed
outright (ops/supervised.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from learncredits.ops.supervised import leave_with_supervisor

logger = logging.getLogger(__name__)
# Expired idempotency records are harmless for a while (never replayed): purging them every
# few minutes keeps the table small without adding a query to every outbox pass.
HOUSEKEEPING_EVERY = 300.0


def _schedule(stop: threading.Event, every: float) -> None:
    from learncredits.billing.tasks import billing_tick

    while not stop.wait(every):
        try:
            close_old_connections()
            billing_tick.enqueue()
        except Exception:  # keep scheduling through a transient database outage
            logger.exception("could not enqueue the billing tick")


def _drain_outbox(stop: threading.Event, every: float) -> None:
    from learncredits.api.housekeeping import purge_expired_idempotency_records
    from learncredits.credits import aging
    from learncredits.notify.delivery import run_once

    next_housekeeping = time.monotonic()
    while not stop.wait(every):
        try:
            close_old_connections()
            run_once()
        except Exception:  # a database or SMTP outage: try again on the next pass
            logger.exception("outbox pass failed")
        if time.monotonic() >= next_housekeeping:
            next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY
            try:
                purge_expired_idempotency_records()
            except Exception:  # as above; it is retried after HOUSEKEEPING_EVERY
                logger.exception("purging expired idempotency records failed")
            try:
                aging.run()
            except Exception:  # as above; every step of it is safe to run again
                logger.exception("releasing unstarted assignments failed")


class Command(BaseCommand):
    help = "Run the background task worker and the periodic billing tick."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        parser.add_argument("--tick", type=float, default=300.0, help="seconds between ticks")
        parser.add_argument("--outbox-interval", type=float, default=1.0)
        parser.add_argument("--max-tasks", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        leave_with_supervisor(stop, options["interval"])
        if options["tick"] > 0:
            threading.Thread(
                target=_schedule, args=(stop, options["tick"]), name="billing-tick", daemon=True
            ).start()
        threading.Thread(
            target=_drain_outbox,
            args=(stop, options["outbox_interval"]),
            name="outbox",
            daemon=True,
        ).start()
        kwargs: dict[str, Any] = {"interval": options["interval"], "no_startup_delay": True}
        if options["max_tasks"] is not None:
            kwargs["max_tasks"] = options["max_tasks"]
        try:
            call_command("db_worker", **kwargs)
        finally:
            stop.set()
