"""Django settings, read from the environment with django-environ.

Everything that differs between a laptop and production comes from environment variables
(``DATABASE_URL``, ``EMAIL_URL``, ``SECRET_KEY``, ``LEARNCREDITS_OPERATOR_TOKEN``,
``ALLOWED_HOSTS``, ``DEBUG``). The defaults give the embedded mode: a SQLite file under
``LEARNCREDITS_VAR_DIR`` (``make run``: ``./var`` of the checkout) and mail printed to the
console. Importing the settings reads the environment and nothing else: it creates no
directory and does not depend on the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent

# FileAwareEnv: any setting may come from a file named by NAME_FILE (SECRET_KEY_FILE=...),
# which is how `make run` hands over its generated key and how container secrets arrive.
env = environ.FileAwareEnv()


def _var_dir() -> Path:
    """Where the embedded mode keeps its files (the SQLite database, collected static files,
    the demo's credentials): ``LEARNCREDITS_VAR_DIR``, or ``learncredits`` in the user's data
    directory (``$XDG_DATA_HOME``, ``~/.local/share``). Never the working directory, so the
    same command finds the same database wherever it is run from. The commands that write
    there create it (cli.py); importing the settings does not."""
    chosen = env.str("LEARNCREDITS_VAR_DIR", default="")
    if chosen:
        return Path(chosen).expanduser().absolute()
    data_home = env.str("XDG_DATA_HOME", default="") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser().absolute() / "learncredits"


VAR_DIR = _var_dir()

DEBUG = env.bool("DEBUG", default=False)
# SECRET_KEY signs sessions and tokens and keys the encryption of secrets at rest; a public
# default would make all of that forgeable, so without one only DEBUG may start.
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY (or SECRET_KEY_FILE, a file holding it) to "
            "50 or more random characters, e.g. the output of "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(64))'`; "
            "or set DEBUG=true for local development with an insecure built-in key."
        )
    SECRET_KEY = "insecure-dev-only-key-never-use-in-production"
# Earlier keys, still accepted for signatures and for decrypting what they encrypted, so a
# key can be rotated without signing everyone out or losing stored secrets.
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
LEARNCREDITS_OPERATOR_TOKEN = env.str("LEARNCREDITS_OPERATOR_TOKEN", default="")

# Payment provider used for purchases; "test" is built in (see billing/payments.py), "stripe"
# charges the org's card on file at Stripe (billing/stripe_provider.py).
LEARNCREDITS_PAYMENT_PROVIDER = env.str("LEARNCREDITS_PAYMENT_PROVIDER", default="test")
# Checked at start, not at the first purchase: a typo must stop the service, not a customer.
PAYMENT_PROVIDERS = ("test", "stripe")
if LEARNCREDITS_PAYMENT_PROVIDER not in PAYMENT_PROVIDERS:
    raise ImproperlyConfigured(
        f"LEARNCREDITS_PAYMENT_PROVIDER is {LEARNCREDITS_PAYMENT_PROVIDER!r}; "
        f"it must be one of: {', '.join(PAYMENT_PROVIDERS)}"
    )
# Stripe: the secret key calls the API, the publishable key is given to Stripe.js in the
# browser, the webhook secret verifies Stripe's webhooks (POST /stripe/webhook).
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", default="")
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", default="")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
STRIPE_JS_URL = env.str("STRIPE_JS_URL", default="https://js.stripe.com/v3/")
# The API base is localstripe, the emulator of the tests (it refuses a few parameters).
STRIPE_LOCALSTRIPE = env.bool("STRIPE_LOCALSTRIPE", default=False)
# Where Stripe sends a customer back after 3-D Secure; empty: LEARNCREDITS_BASE_URL's page.
STRIPE_RETURN_URL = env.str("STRIPE_RETURN_URL", default="")
# Origins the dashboard's card form loads Stripe.js from and talks to (added to the CSP below).
PAYMENT_CSP_ORIGINS: list[str] = []
if LEARNCREDITS_PAYMENT_PROVIDER == "stripe":
    # Like an unknown provider: a missing key must stop the service at start, not fail the
    # first customer who buys (or silently accept unverifiable webhooks).
    for _name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"):
        if not globals()[_name]:
            raise ImproperlyConfigured(
                f"{_name} is not set, and LEARNCREDITS_PAYMENT_PROVIDER is 'stripe'. Set "
                f"{_name} (or {_name}_FILE, a file holding it) from the Stripe dashboard "
                "(Developers > API keys, and Webhooks for STRIPE_WEBHOOK_SECRET)."
            )
    for _url in (STRIPE_JS_URL, STRIPE_API_BASE):
        _scheme, _, _rest = _url.partition("://")
        _origin = f"{_scheme}://{_rest.split('/', 1)[0]}"
        if _origin not in PAYMENT_CSP_ORIGINS:
            PAYMENT_CSP_ORIGINS.append(_origin)
# Largest request body the API accepts; bulk assignment of 10,000 ids fits comfortably.
LEARNCREDITS_MAX_BODY_BYTES = env.int("LEARNCREDITS_MAX_BODY_BYTES", default=1024 * 1024)
# Monthly invoices are due this many days after issue (then past_due).
LEARNCREDITS_INVOICE_DUE_DAYS = env.int("LEARNCREDITS_INVOICE_DUE_DAYS", default=14)
# Seller shown on invoices.
LEARNCREDITS_SELLER = env.str("LEARNCREDITS_SELLER", default="learncredits Marketplace Inc.")
# Until the operator sets the seller's details (PUT /seller), documents print these.
LEARNCREDITS_SELLER_COUNTRY = env.str("LEARNCREDITS_SELLER_COUNTRY", default="US")
LEARNCREDITS_SELLER_ADDRESS = env.str(
    "LEARNCREDITS_SELLER_ADDRESS", default="1 Market Street, San Francisco, CA 94105, USA"
)
# A declined monthly charge is retried this many days after issue, then given up.
LEARNCREDITS_COLLECTION_RETRY_DAYS = [1, 3, 7]
# Where people open the dashboard (links in emails).
LEARNCREDITS_BASE_URL = env.str("LEARNCREDITS_BASE_URL", default="http://127.0.0.1:8000")
# Single sign-on issuers must be https URLs; this (or DEBUG) also allows plain http to a
# provider on this machine (127.0.0.1, localhost), as the tests run one.
LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST = env.bool(
    "LEARNCREDITS_SSO_ALLOW_HTTP_LOCALHOST", default=False
)
# Outbox retry schedules, in seconds after each failed attempt (jittered by +-20%).
LEARNCREDITS_EMAIL_RETRY_SECONDS = [10, 30, 60, 300, 900, 1800, 3600, 3600, 3600]
LEARNCREDITS_WEBHOOK_RETRY_SECONDS = [5, 300, 1800, 7200, 18000, 36000, 36000]
LEARNCREDITS_WEBHOOK_TIMEOUT_SECONDS = 10.0
# Consecutive failed attempts after which a webhook endpoint is switched off.
LEARNCREDITS_WEBHOOK_DISABLE_AFTER = env.int("LEARNCREDITS_WEBHOOK_DISABLE_AFTER", default=15)
# Webhook URLs on private, loopback or link-local addresses are refused unless this is set
# (tests and local development).
LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE = env.bool("LEARNCREDITS_WEBHOOK_ALLOW_PRIVATE", default=DEBUG)
# Per-key API request budgets (django-ratelimit syntax; empty turns a limit off). They count
# in the configured cache: set CACHE_URL (e.g. redis://127.0.0.1:6379/1) so that several
# web processes share one budget.
LEARNCREDITS_RATE_LIMIT = env.str("LEARNCREDITS_RATE_LIMIT", default="6000/m")
LEARNCREDITS_RATE_LIMIT_OPERATOR = env.str("LEARNCREDITS_RATE_LIMIT_OPERATOR", default="")
REDIS_CACHE_BACKEND = "django.core.cache.backends.redis.RedisCache"
# Django reads these cache settings in upper case (KEY_PREFIX ...); django-environ hands them
# over from the URL in lower case for Django's Redis backend, where Django would ignore them.
_CACHE_BASE_OPTIONS = ("key_prefix", "key_function", "timeout", "version")


def _cache() -> dict[str, Any]:
    """The cache named by ``CACHE_URL``; ``redis://`` (or ``rediss://``) is Django's own Redis
    backend, whatever else is installed: django-environ would pick django-redis when that
    happens to be importable, a different client with different options and errors.

    Short socket timeouts unless the URL sets its own (``?socket_timeout=2``): only the
    rate-limit counters live there and they fail open (api/auth.py), so a Redis that stops
    answering must cost a request half a second, not a hung worker thread."""
    url = env.str("CACHE_URL", default="locmemcache://learncredits")
    if url.partition("://")[0] not in ("redis", "rediss"):
        return dict(env.cache_url_config(url))
    config: dict[str, Any] = env.cache_url_config(url, backend=REDIS_CACHE_BACKEND)
    for name in _CACHE_BASE_OPTIONS:
        if name in config:
            config[name.upper()] = config.pop(name)
    options = config.setdefault("OPTIONS", {})
    options.setdefault("socket_connect_timeout", 0.5)
    options.setdefault("socket_timeout", 0.5)
    return config


CACHES = {"default": _cache()}
RATELIMIT_USE_CACHE = "default"
# A counter the cache could not read or write lets the request through (the API keeps
# working through a cache outage); see check_rate in api/auth.py.
RATELIMIT_FAIL_OPEN = True
# How long an Idempotency-Key is remembered (docs/api.md: 24 hours).
LEARNCREDITS_IDEMPOTENCY_TTL_SECONDS = 24 * 3600

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_tasks",
    "django_tasks_db",
    # ninja's own templates and static files: the API docs page loads Swagger UI from this
    # service, not from a CDN, so it works with no network.
    "ninja",
    "learncredits.tenancy",
    "learncredits.catalog",
    "learncredits.credits",
    "learncredits.billing",
    "learncredits.notify",
    "learncredits.integrations",
    "learncredits.api",
    "learncredits.ops",
    "learncredits.web",
    "learncredits.audit",
    "axes",
]

AUTHENTICATION_BACKENDS = [
    # Throttles failed sign-ins per account and per address: claims an attempt in the
    # database before the password is checked (web/signin.py, on top of django-axes).
    "learncredits.web.signin.ThrottledSignInBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# django-axes' records and locked-out page, deciding from the same claimed budgets.
AXES_HANDLER = "learncredits.web.signin.ThrottledSignInHandler"
AXES_USERNAME_CALLABLE = "learncredits.web.signin.recorded_username"
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
LOGIN_URL = "/login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login"

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Chooses primary or replica for the request's reads (db/routing.py): before anything
    # that may read, including the API key check.
    "learncredits.db.routing.ReadRoutingMiddleware",
    "learncredits.audit.trail.AuditOriginMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "learncredits.api.bodies.RequestBodyMiddleware",
    "learncredits.api.middleware.ApiBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "learncredits.web.middleware.RejectNulFormsMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "learncredits.web.headers.LazyMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "learncredits.web.headers.CachedCSPMiddleware",
    "learncredits.api.middleware.IdempotencyMiddleware",
    "axes.middleware.AxesMiddleware",
]

# Content security policy (django-csp): our own scripts and styles only; no inline script.
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/v1/docs"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", *PAYMENT_CSP_ORIGINS],
        # Stripe.js (stripe provider only) frames its card fields and calls its API.
        **({"frame-src": ["'self'", *PAYMENT_CSP_ORIGINS]} if PAYMENT_CSP_ORIGINS else {}),
        **({"connect-src": ["'self'", *PAYMENT_CSP_ORIGINS]} if PAYMENT_CSP_ORIGINS else {}),
        # The invoice page carries its own <style> (shared with the PDF), allowed by nonce.
        "style-src": ["'self'", NONCE],
        "img-src": ["'self'", "data:"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'none'"],
        "object-src": ["'none'"],
    },
}

ROOT_URLCONF = "learncredits.urls"
WSGI_APPLICATION = "learncredits.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "learncredits.web.context.dashboard",
            ],
        },
    },
]


def _database() -> dict[str, object]:
    default_url = f"sqlite:///{VAR_DIR / 'learncredits.sqlite3'}"
    db = env.db_url("DATABASE_URL", default=default_url)
    if db["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers run beside the one writer; FULL makes a commit durable;
        # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead of
        # failing on lock upgrade. Our backend queues writers in order before BEGIN
        # (db/sqlite3/base.py); the timeout is for writers outside that queue.
        if env.bool("SQLITE_WRITER_QUEUE", default=True):
            db["ENGINE"] = "learncredits.db.sqlite3"
        db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        }
    else:
        if db["ENGINE"] == "django.db.backends.postgresql":
            # The same backend, with a health check that costs no round trip.
            db["ENGINE"] = "learncredits.db.postgresql"
        db.setdefault("CONN_MAX_AGE", 60)
        db["CONN_HEALTH_CHECKS"] = True
        # Server-side prepared statements for the statements the hot paths send on their
        # own server-binding cursors (db/store.py): planning them again on every request
        # was a third of the database's time for a start. Django's ORM queries keep
        # client-side binding and are never prepared. Set DB_PREPARE_THRESHOLD to 0 behind
        # a transaction-pooling PgBouncer older than 1.21 (which cannot keep them).
        threshold = env.int("DB_PREPARE_THRESHOLD", default=5)
        db["OPTIONS"] = {**db.get("OPTIONS", {}), "prepare_threshold": threshold or None}
    return dict(db)


def _replica_database(primary: dict[str, object]) -> dict[str, object] | None:
    """The streaming replica that serves reports and lists (db/routing.py), when
    ``DATABASE_REPLICA_URL`` names one. A short connect timeout, so a replica that does not
    answer is skipped quickly (the primary serves); never migrated, never a test database."""
    url = env.str("DATABASE_REPLICA_URL", default="")
    if not url:
        return None
    replica = env.db_url_config(url)
    if primary["ENGINE"] != "learncredits.db.postgresql" or replica["ENGINE"] not in (
        "django.db.backends.postgresql",
        "learncredits.db.postgresql",
    ):
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URL names a PostgreSQL streaming replica of the PostgreSQL "
            "primary in DATABASE_URL; both must be postgres:// URLs."
        )
    replica["ENGINE"] = "learncredits.db.postgresql"
    replica.setdefault("CONN_MAX_AGE", primary.get("CONN_MAX_AGE", 60))
    replica["CONN_HEALTH_CHECKS"] = True
    options = dict(primary.get("OPTIONS", {}))  # type: ignore[call-overload]
    options.update(replica.get("OPTIONS", {}))
    options.setdefault("connect_timeout", 1)
    replica["OPTIONS"] = options
    replica["TEST"] = {"MIRROR": "default"}
    return dict(replica)


DATABASES = {"default": _database()}
_REPLICA = _replica_database(DATABASES["default"])
if _REPLICA is not None:
    DATABASES["replica"] = _REPLICA
    DATABASE_ROUTERS = ["learncredits.db.routing.ReplicaRouter"]
# A replica lagging more than this many seconds is skipped (the primary serves).
DATABASE_REPLICA_MAX_LAG = env.float("DATABASE_REPLICA_MAX_LAG", default=30.0)
# After a write, its caller (API key or session) reads the primary for this long.
LEARNCREDITS_READ_YOUR_WRITES_SECONDS = env.float(
    "LEARNCREDITS_READ_YOUR_WRITES_SECONDS", default=5.0
)
# After the replica fails to answer, it is left alone this long (the primary serves).
LEARNCREDITS_REPLICA_RETRY_SECONDS = env.float("LEARNCREDITS_REPLICA_RETRY_SECONDS", default=5.0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@learncredits.localhost")

TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"  # created by cli.py (whitenoise warns when it is missing)
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

DATA_UPLOAD_MAX_MEMORY_SIZE = LEARNCREDITS_MAX_BODY_BYTES
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# Behind TLS (production): secure cookies, HTTPS redirect and HSTS. Off for the embedded
# http://127.0.0.1 mode. LEARNCREDITS_HTTPS=true turns all of it on.
HTTPS = env.bool("LEARNCREDITS_HTTPS", default=False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
SECURE_HSTS_SECONDS = 31_536_000 if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if env.bool("LEARNCREDITS_BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}
