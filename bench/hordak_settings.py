"""Django settings for the django-hordak peer benchmark (bench/hordak_peer.py).

Used only by the separate virtualenv that holds django-hordak (var/bench/venv-hordak),
never by learncredits itself. The database comes from DATABASE_URL (PostgreSQL).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

_url = urlsplit(os.environ["DATABASE_URL"])

SECRET_KEY = "bench-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "mptt",
    "hordak",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "USER": _url.username or "",
        "HOST": _url.hostname or "127.0.0.1",
        "PORT": str(_url.port or 5432),
        "CONN_MAX_AGE": 60,
    }
}
DEFAULT_CURRENCY = "USD"
CURRENCIES = ["USD"]
HORDAK_CURRENCIES = ["USD"]
