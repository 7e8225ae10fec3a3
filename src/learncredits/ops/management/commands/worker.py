"""``learncredits worker``: run the background worker alone (django-tasks database backend)."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the background task worker (django-tasks-db)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
        parser.add_argument("--max-tasks", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        kwargs: dict[str, Any] = {"interval": options["interval"], "no_startup_delay": True}
        if options["max_tasks"] is not None:
            kwargs["max_tasks"] = options["max_tasks"]
        call_command("db_worker", **kwargs)
