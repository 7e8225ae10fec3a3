"""The ``learncredits`` command: Django's manage.py with our commands' dashed names.

``learncredits verify-ledger`` runs the ``verify_ledger`` management command, and every
Django command (``migrate``, ``createsuperuser``, ``shell`` ...) works as with manage.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "learncredits.settings")
    if len(args) > 1 and not args[1].startswith("-"):
        args[1] = args[1].replace("-", "_")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        settings.INSTALLED_APPS  # noqa: B018 (loads the settings, which check the environment)
    except ImproperlyConfigured as exc:
        # A configuration mistake is the operator's to fix: say which, without a traceback.
        sys.exit(f"learncredits: {exc}")
    prepare_directories(settings)
    execute_from_command_line(args)


def prepare_directories(settings: Any) -> None:
    """Create the directories the embedded mode writes to: the SQLite file's and the static
    files' (settings name them; a command creates them, importing the settings does not)."""
    database = settings.DATABASES["default"]
    name = str(database.get("NAME") or "")
    if (
        "sqlite" in str(database.get("ENGINE", ""))
        and name
        and not name.startswith((":memory:", "file:"))
    ):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    main()
