"""batchweb settings: everything that differs between machines comes from the environment.

A `.env` file beside manage.py is read when present. See `.env.example` for every name.
"""

import datetime as dt
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from batchweb.version import code_version

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Where batchweb keeps its files: the SQLite database by default, uploads waiting for
# confirmation, local copies of result files, the generated secret key.
DATA_DIR = Path(env.str("BATCHWEB_DATA_DIR", default=str(BASE_DIR / "data")))

DEBUG = env.bool("DJANGO_DEBUG", default=False)

# A development key is only acceptable while DEBUG is on; production must set its own.
_DEV_SECRET_KEY = "django-insecure-batchweb-development-only"  # noqa: S105
# `manage.py serve` (the README's run command) writes a random key to this file on first start,
# so a single-machine install needs no set-up; production sets DJANGO_SECRET_KEY instead.
SECRET_KEY_FILE = Path(env.str("DJANGO_SECRET_KEY_FILE", default=str(DATA_DIR / "secret_key")))
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY and SECRET_KEY_FILE.is_file():
    SECRET_KEY = SECRET_KEY_FILE.read_text().strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string "
            '(python -c "import secrets; print(secrets.token_urlsafe(50))"), '
            "or set DJANGO_DEBUG=true for local development."
        )
    SECRET_KEY = _DEV_SECRET_KEY
elif not DEBUG and (
    SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 40 or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is too weak for production (it must be at least 40 characters, "
        "random, and not a django-insecure development key). Generate one with "
        'python -c "import secrets; print(secrets.token_urlsafe(50))".'
    )

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "batchweb.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "batches",
    "axes",  # throttles failed sign-ins
    "api",
]

MIDDLEWARE = [
    "batchweb.logs.RequestIdMiddleware",  # first: every log line of a request carries its id
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every answer to a signed-in request (pages, exports, downloads, /v1/ with a token) is
    # sent with Cache-Control: private, no-store unless its view said something as strict.
    "batches.middleware.PrivateNoStoreMiddleware",
    "batches.middleware.SessionIdleMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Before anything reads the body: a request larger than any input file is refused (413).
    "batches.uploads.UploadLimitMiddleware",
    "batchweb.headers.PermissionsPolicyMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out sign-in into its page
]

ROOT_URLCONF = "batchweb.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "batches.context_processors.dashboard",
            ],
        },
    },
]

WSGI_APPLICATION = "batchweb.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'batchweb.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web + worker) share the file: wait for locks instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
# Each web thread keeps its connection between requests (a minute unused at most): opening one
# (and, for SQLite, setting it up) cost more than a page served from the page cache.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "batch-list"
LOGOUT_REDIRECT_URL = "login"

# --- Signing in (docs/sign-in.md) -------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "batches.services.signin.ThrottleBackend",  # django-axes: refuses locked accounts/addresses
    "batches.services.signin.PasswordBackend",
    "batches.services.signin.CompanyBackend",  # OpenID Connect, when OIDC_ISSUER_URL is set
]
# false: only superusers sign in with a password; everyone else through the company provider.
BATCHWEB_PASSWORD_SIGNIN = env.bool("BATCHWEB_PASSWORD_SIGNIN", default=True)
# Company sign-in (mozilla-django-oidc). The endpoints come from the issuer's discovery document.
OIDC_ISSUER_URL = env.str("OIDC_ISSUER_URL", default="").rstrip("/")
OIDC_RP_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="your company account")
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
OIDC_ROLE_MAP = env.str("OIDC_ROLE_MAP", default="")  # batch-admins=Admins,batch-ops=Operators
# false: a superuser's email address asserted by the provider does not sign the superuser in.
OIDC_SUPERUSERS = env.bool("OIDC_SUPERUSERS", default=False)
OIDC_RP_SCOPES = env.str("OIDC_SCOPES", default="openid email profile")
OIDC_RP_SIGN_ALGO = env.str("OIDC_SIGN_ALGO", default="RS256")
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", default=10.0)
# true: send the client secret to the token endpoint with HTTP Basic (client_secret_basic).
OIDC_TOKEN_USE_BASIC_AUTH = env.bool("OIDC_TOKEN_USE_BASIC_AUTH", default=False)
OIDC_USE_PKCE = True
OIDC_AUTHENTICATION_CALLBACK_URL = "oidc-callback"
# The library's endpoint settings, unused: CompanyBackend reads the discovery document.
OIDC_OP_TOKEN_ENDPOINT = OIDC_OP_USER_ENDPOINT = OIDC_OP_AUTHORIZATION_ENDPOINT = ""
# Failed sign-ins (django-axes): this many failures within the lockout time lock the account,
# and separately the address, for that long after the last one.
AXES_FAILURE_LIMIT = env.int("BATCHWEB_SIGNIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("BATCHWEB_SIGNIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # a lockout ends when it said it would
AXES_LOCKOUT_CALLABLE = "batches.views.signin.locked_out"
AXES_CLIENT_IP_CALLABLE = "batches.services.signin.client_address"
AXES_DISABLE_ACCESS_LOG = True  # the audit trail records sign-ins
AXES_VERBOSE = False
# A session ends after this long without a person's request (live updates do not count).
SESSION_IDLE_MINUTES = env.int("BATCHWEB_SESSION_IDLE_MINUTES", default=480)
SESSION_COOKIE_AGE = SESSION_IDLE_MINUTES * 60
SESSION_ENGINE = "batches.sessions"  # Django's database sessions, read in SQL written once

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Uploaded JSONL files go to disk past this size, never into memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
FILE_UPLOAD_TEMP_DIR = env.str("BATCHWEB_UPLOAD_DIR", default=None)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# Bodies larger than the largest connection's file limit plus the form are refused before they
# are read (batches/uploads.py). Each person's checked files waiting for confirmation in
# data/staging/ may take this much at most (batches/services/submissions.py).
STAGING_QUOTA_MB = env.int("BATCHWEB_STAGING_QUOTA_MB", default=1024)


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL: what a CSP source names."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- HTTPS and browser protections (docs/production.md) -------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("DJANGO_BEHIND_PROXY", default=False) else None
)
# DJANGO_HTTPS=true: people reach batchweb over HTTPS only (directly, or through a proxy that
# terminates TLS and sets X-Forwarded-Proto: then set DJANGO_BEHIND_PROXY=true too).
SECURE_SSL_REDIRECT = env.bool("DJANGO_HTTPS", default=False)
# Strict-Transport-Security, sent over HTTPS only: browsers then refuse plain HTTP for this
# long. 0 switches it off (for a trial, or when the proxy sends its own).
SECURE_HSTS_SECONDS = env.int(
    "DJANGO_HSTS_SECONDS", default=31_536_000 if SECURE_SSL_REDIRECT else 0
)
# Covers the subdomains of batchweb's own host name (not its parent domain's).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=SECURE_HSTS_SECONDS > 0
)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_HSTS_PRELOAD", default=False)
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# What a sign-in without its CSRF cookie says: which setting is wrong (batches/views/errors.py).
CSRF_FAILURE_VIEW = "batches.views.errors.csrf_failure"
# No inline script or style anywhere: pages load batchweb.js, htmx and batchweb.css only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        # A form may lead to batchweb, or (signing in or out) to the company's provider.
        "form-action": ["'self'", *([_origin(OIDC_ISSUER_URL)] if OIDC_ISSUER_URL else [])],
    }
}
# Features no page uses, refused for every page (batchweb/headers.py).
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), usb=(), interest-cohort=()"
)

# --- Upstream (the OpenAI API or any compatible server) -------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1").rstrip("/")
OPENAI_ORG_ID = env.str("OPENAI_ORG_ID", default="")
OPENAI_PROJECT_ID = env.str("OPENAI_PROJECT_ID", default="")
# Verifies OpenAI's webhooks for the first connection (others keep theirs on the connection).
OPENAI_WEBHOOK_SECRET = env.str("OPENAI_WEBHOOK_SECRET", default="")

# --- Notifications --------------------------------------------------------------------------
# Email goes through Django's email framework: EMAIL_URL in django-environ's form, e.g.
# smtp://user:pass@mail.example.com:587 (smtp+tls://, smtp+ssl://, consolemail://).
EMAIL_URL = env.str("EMAIL_URL", default="")
if EMAIL_URL:
    vars().update(env.email_url("EMAIL_URL"))
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env.str("BATCHWEB_EMAIL_FROM", default="batchweb <batchweb@localhost>")
# The address pages are reached on, for links in emails and chat messages.
BATCHWEB_BASE_URL = env.str("BATCHWEB_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# A shortcut for one team channel (Slack-compatible incoming webhook, or JSON + HMAC).
BATCHWEB_NOTIFY_WEBHOOK_URL = env.str("BATCHWEB_NOTIFY_WEBHOOK_URL", default="")
BATCHWEB_NOTIFY_WEBHOOK_SECRET = env.str("BATCHWEB_NOTIFY_WEBHOOK_SECRET", default="")
# Attempts before a notification is given up ("dead", shown to admins), and the waits between.
NOTIFY_MAX_ATTEMPTS = env.int("BATCHWEB_NOTIFY_MAX_ATTEMPTS", default=8)
NOTIFY_BACKOFF_MIN_SECONDS = env.float("BATCHWEB_NOTIFY_BACKOFF_MIN_SECONDS", default=30.0)
NOTIFY_BACKOFF_MAX_SECONDS = env.float("BATCHWEB_NOTIFY_BACKOFF_MAX_SECONDS", default=3600.0)
NOTIFY_LEASE_SECONDS = env.float("BATCHWEB_NOTIFY_LEASE_SECONDS", default=60.0)
OPENAI_CONNECT_TIMEOUT = env.float("OPENAI_CONNECT_TIMEOUT", default=10.0)
OPENAI_READ_TIMEOUT = env.float("OPENAI_READ_TIMEOUT", default=60.0)
OPENAI_MAX_RETRIES = env.int("OPENAI_MAX_RETRIES", default=2)
# Calls made while a person waits on a page (detail refresh, cancel, sync now) give up sooner.
OPENAI_PAGE_TIMEOUT = env.float("OPENAI_PAGE_TIMEOUT", default=15.0)
# The /v1/ API: an identical create (same person, connection and request) within this many
# seconds, with no Idempotency-Key, is taken for the SDK's retry and answers the same batch;
# a retry waits this long for an attempt still in progress.
BATCHWEB_API_RETRY_WINDOW_SECONDS = env.float("BATCHWEB_API_RETRY_WINDOW_SECONDS", default=3600.0)
BATCHWEB_API_IN_FLIGHT_WAIT_SECONDS = env.float("BATCHWEB_API_IN_FLIGHT_WAIT_SECONDS", default=30.0)
# Encrypts the API keys stored on connections (a Fernet key or a long passphrase; several,
# comma-separated, rotate: the first encrypts). `make run` generates data/encryption_key.
ENCRYPTION_KEY_FILE = Path(
    env.str("BATCHWEB_ENCRYPTION_KEY_FILE", default=str(DATA_DIR / "encryption_key"))
)
BATCHWEB_ENCRYPTION_KEY = env.str("BATCHWEB_ENCRYPTION_KEY", default="")
if not BATCHWEB_ENCRYPTION_KEY and ENCRYPTION_KEY_FILE.is_file():
    BATCHWEB_ENCRYPTION_KEY = ENCRYPTION_KEY_FILE.read_text().strip()
# Set by demo mode (`manage.py serve` with no key): pages show a banner saying so.
BATCHWEB_DEMO = env.bool("BATCHWEB_DEMO", default=False)

# --- The sync worker ------------------------------------------------------------------------
SYNC_INTERVAL_SECONDS = env.float("BATCHWEB_SYNC_INTERVAL", default=10.0)
SYNC_MAX_PAGES = env.int("BATCHWEB_SYNC_MAX_PAGES", default=1000)
# "Sync now" keeps a person waiting: it reads at most this many pages and refreshes at most
# this many running batches, and leaves the rest to the worker.
SYNC_NOW_MAX_PAGES = env.int("BATCHWEB_SYNC_NOW_MAX_PAGES", default=20)
SYNC_NOW_MAX_REFRESHES = env.int("BATCHWEB_SYNC_NOW_MAX_REFRESHES", default=50)
# A running batch is fetched again after SYNC_REFRESH_MIN_SECONDS; the wait grows by
# SYNC_REFRESH_GROWTH each time nothing changed, up to SYNC_REFRESH_MAX_SECONDS.
SYNC_REFRESH_MIN_SECONDS = env.float("BATCHWEB_SYNC_REFRESH_MIN_SECONDS", default=5.0)
SYNC_REFRESH_MAX_SECONDS = env.float("BATCHWEB_SYNC_REFRESH_MAX_SECONDS", default=300.0)
SYNC_REFRESH_GROWTH = env.float("BATCHWEB_SYNC_REFRESH_GROWTH", default=2.0)
# A running batch upstream no longer knows (404) is looked at again this much later.
SYNC_GONE_INTERVAL_SECONDS = env.float("BATCHWEB_SYNC_GONE_INTERVAL_SECONDS", default=3600.0)
# How long a worker's claim keeps other workers off a batch while it fetches it.
SYNC_LEASE_SECONDS = env.float("BATCHWEB_SYNC_LEASE_SECONDS", default=60.0)
SYNC_CLAIM_SIZE = env.int("BATCHWEB_SYNC_CLAIM_SIZE", default=25)
SYNC_MAX_REFRESHES_PER_PASS = env.int("BATCHWEB_SYNC_MAX_REFRESHES_PER_PASS", default=500)
# How often a pass walks the whole list (otherwise it stops at the first page with no news).
SYNC_FULL_EVERY_SECONDS = env.float("BATCHWEB_SYNC_FULL_EVERY_SECONDS", default=6 * 3600.0)
# Waits after an upstream failure without Retry-After: doubling from the first to the last.
SYNC_BACKOFF_MIN_SECONDS = env.float("BATCHWEB_SYNC_BACKOFF_MIN_SECONDS", default=10.0)
SYNC_BACKOFF_MAX_SECONDS = env.float("BATCHWEB_SYNC_BACKOFF_MAX_SECONDS", default=600.0)
# Batches that finished this recently get their result summary from the worker; older ones
# when someone opens their results.
SYNC_SUMMARY_WINDOW_SECONDS = env.float("BATCHWEB_SYNC_SUMMARY_WINDOW_SECONDS", default=48 * 3600.0)
# Seconds between the worker's chores (summaries, results tables, removing old local files).
SYNC_HOUSEKEEPING_EVERY_SECONDS = env.float(
    "BATCHWEB_SYNC_HOUSEKEEPING_EVERY_SECONDS", default=60.0
)

# Seconds between the live updates of running batches on the list and detail pages.
LIVE_POLL_SECONDS = env.int("BATCHWEB_LIVE_POLL_SECONDS", default=5)
# A running batch's open page asks the sync worker to fetch it again at its next pass, at most
# once per this many seconds whoever and however many are looking (sync.batch_refresh_soon).
DETAIL_REFRESH_SECONDS = env.float("BATCHWEB_DETAIL_REFRESH_SECONDS", default=5.0)
# A monitor that sends it as `Authorization: Bearer <token>` to /healthz gets each
# connection's sync ages by name; without it /healthz gives counts only. Empty: names only
# for a signed-in Admin.
HEALTH_TOKEN = env.str("BATCHWEB_HEALTH_TOKEN", default="")

# --- Caches (docs/architecture.md: "Caching") ------------------------------------------------
# CACHE_URL chooses where rendered rows and pages are kept: in each process (the default), or
# in one cache every web process shares, e.g. CACHE_URL=redis://127.0.0.1:6379/0 (the
# documented choice for more than one web process or machine). Either way a cached copy is
# never older than the last write it shows: its key holds the cache generations
# (batches/models/generation.py) and the code's version, so nothing is ever invalidated by hand.
# What is about one person (the signed-in account, its permissions, what it may see) stays in
# "people", per process whatever CACHE_URL says: no account (nor its password hash) is ever
# written to a shared cache.
_SHARED = env.cache_url("CACHE_URL", default="locmemcache://")
_SHARED_IS_LOCAL = _SHARED["BACKEND"].endswith("LocMemCache")
if _SHARED["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # The same, but an unreachable Redis is an empty cache, not an error (batchweb/cache.py).
    _SHARED["BACKEND"] = "batchweb.cache.ForgivingRedisCache"


def _shared(location: str, timeout: int, entries: int) -> dict:
    """One alias of the cache CACHE_URL names: in this process, or shared under keys that name
    the alias and the code's version (a deploy never reads what the old code wrote)."""
    if _SHARED_IS_LOCAL:
        return {
            **_SHARED,
            "LOCATION": location,
            "TIMEOUT": timeout,
            "OPTIONS": {"MAX_ENTRIES": entries},
        }
    return {**_SHARED, "KEY_PREFIX": f"{location}-{code_version()}", "TIMEOUT": timeout}


CACHES = {
    "default": _shared("batchweb-default", 300, 1000),
    # The list's rendered rows (batches/views/rows.py), keyed by what each row shows of its
    # batch. About 2 KB a row.
    "rows": _shared(
        "batchweb-rows", 24 * 3600, env.int("BATCHWEB_ROW_CACHE_ENTRIES", default=5000)
    ),
    # Whole page bodies (the list, batch pages, live rows) per cache generation and person:
    # batches/views/page_cache.py. Each is kept a minute at most.
    "pages": _shared("batchweb-pages", 60, env.int("BATCHWEB_PAGE_CACHE_ENTRIES", default=2000)),
    # The person of a session, their permissions and access, per cache generation: per process.
    "people": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "batchweb-people",
        "TIMEOUT": 60,
        "OPTIONS": {"MAX_ENTRIES": 5000},
    },
}

# --- Results --------------------------------------------------------------------------------
# Local copies of result files (and the results table built from them) unused this long are
# removed by the worker; they are fetched again when someone opens them.
RESULT_RETENTION_DAYS = env.int("BATCHWEB_RESULT_RETENTION_DAYS", default=7)

# --- Health check (docs/production.md) -----------------------------------------
# Load balancers probe /healthz over plain HTTP inside the network: it answers there too,
# rather than redirecting to HTTPS (it holds no secret and sets no cookie).
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# --- Logs (docs/production.md) -------------------------------------------------
# One line per record on standard error, with the request's id (X-Request-ID): key=value pairs
# ("text", the default) or one JSON object ("json") for a log collector. gunicorn's access log
# is gunicorn's own and is left as it is.
BATCHWEB_LOG_FORMAT = env.str("BATCHWEB_LOG_FORMAT", default="text").strip().lower()
if BATCHWEB_LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(
        f"BATCHWEB_LOG_FORMAT is {BATCHWEB_LOG_FORMAT!r}: set it to text or json."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "batchweb.logs.RequestIdFilter"}},
    "formatters": {
        "text": {"()": "batchweb.logs.TextFormatter"},
        "json": {"()": "batchweb.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": BATCHWEB_LOG_FORMAT,
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's own console handler (DEBUG only) would print its records a second time.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "django.db.backends": {"level": "INFO"},
    },
}
