"""Settings for the test suite: the real settings, with a SECRET_KEY made for the run.

Production refuses to start without a SECRET_KEY (settings.py). The suite gets one here,
through the environment rather than by overriding the setting, so that the service and
worker processes the tests start inherit the same key and can read what the test process
encrypted. A key already in the environment is kept.
"""

import os
import secrets

os.environ.setdefault("SECRET_KEY", "test-" + secrets.token_urlsafe(48))

from learncredits.settings import *  # noqa: F403
from learncredits.settings import STATIC_ROOT

# The suite does not go through cli.py, which creates this for the service.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
