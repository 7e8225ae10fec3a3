"""WSGI entry point used by ``learncredits serve`` (gunicorn)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "learncredits.settings")
application = get_wsgi_application()
