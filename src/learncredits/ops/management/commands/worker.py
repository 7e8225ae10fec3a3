"""``learncredits worker``: the background worker.

Three loops: django-tasks' database worker runs queued tasks (collections, auto top-ups);
a scheduler enqueues the periodic billing tick (close each org's month once it has ended,
retry declined charges) every ``--tick`` seconds; and the outbox loop sends due emails and
webhooks every ``--outbox-interval`` seconds. Every step is idempotent, so running several
workers is harmless.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import close_old_connections

logger = logging.getLogger(__name__)


def _schedule(stop: threading.Event, every: float) -> None:
    from learncredits.billing.tasks import billing_tick

    while not stop.wait(every):
        try:
            close_old_connections()
            billing_tick.enqueue()
        except Exception:  # keep scheduling through a transient database outage
            logger.exception("could not enqueue the billing tick")


def _drain_outbox(stop: threading.Event, every: float) -> None:
    from learncredits.notify.delivery import run_once

    while not stop.wait(every):
        try:
            close_old_connections()
            run_once()
        except Exception:  # a database or SMTP outage: try again on the next pass
            logger.exception("outbox pass failed")


class Command(BaseCommand):
    help = "Run the background task worker and the periodic billing tick."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        parser.add_argument("--tick", type=float, default=300.0, help="seconds between ticks")
        parser.add_argument("--outbox-interval", type=float, default=1.0)
        parser.add_argument("--max-tasks", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
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
