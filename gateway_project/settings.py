"""One settings module: embedded defaults, real backends switched on by environment.

| concern        | no env                    | env                              |
|----------------|---------------------------|----------------------------------|
| database       | SQLite file in var/       | DATABASE_URL                     |
| cache          | local memory              | REDIS_URL                        |
| channel layer  | in memory                 | REDIS_URL                        |
| Celery         | eager, in process         | CELERY_BROKER_URL or REDIS_URL   |
| encryption     | key file in var/          | GATEWAY_ENCRYPTION_KEYS          |
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
VAR_DIR = Path(env.str("GATEWAY_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key_from_file() -> str:
    """A random key kept in var/, so the embedded setup is safe without any env."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="") or _secret_key_from_file()
if not DEBUG and (
    len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure")
):
    raise ImproperlyConfigured("SECRET_KEY is too weak for DEBUG=False: use 50+ random characters.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("GATEWAY_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "csp",
    "apps.core",
    "apps.tenants",
    "apps.keys",
    "apps.providers",
    "apps.gateway",
    "apps.billing",
    "apps.experiments",
    "apps.finetunes",
    "apps.guardrails",
    "apps.audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.core.csp.ContentSecurityPolicyMiddleware",
    "apps.audit.middleware.AuditContextMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
ASGI_APPLICATION = "gateway_project.asgi.application"

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
            ],
        },
    },
]

# --- database -------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'gateway.sqlite3'}")
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and IMMEDIATE transactions let the server, workers and tests share one file.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file (not :memory:) so live-server processes share it; one per test run.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("GATEWAY_DB_CONN_MAX_AGE", default=60))
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- cache, channel layer, Celery -------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "gw",
        }
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "gw:channels"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="") or REDIS_URL
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env.str("GATEWAY_CELERY_QUEUE", default="gateway")
CELERY_BEAT_SCHEDULE = {
    # A backlog of minute ticks is pointless: one run catches up with everything.
    "billing-rollups": {
        "task": "billing.rollups_update",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "billing-invoices": {"task": "billing.invoices_close", "schedule": crontab(minute=30, hour=1)},
    "billing-invoice-drafts": {
        "task": "billing.invoices_draft",
        "schedule": crontab(minute=45, hour=1),
    },
    # Free health probes (a models list); they also close circuits of recovered providers.
    "providers-probe": {
        "task": "providers.probe_all",
        "schedule": env.float("GATEWAY_PROBE_SECONDS", default=60.0),
        "options": {"expires": 50},
    },
}

# --- auth, i18n, static -----------------------------------------------------
# django-axes first: it refuses a locked-out username+address before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
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

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the finders so the admin, docs and chat work without collectstatic.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- security ---------------------------------------------------------------
# GATEWAY_HTTPS says the gateway is reached over TLS (directly or behind a proxy that
# sets X-Forwarded-Proto). The embedded quickstart runs on plain http://127.0.0.1.
GATEWAY_HTTPS = env.bool("GATEWAY_HTTPS", default=False)
SESSION_COOKIE_SECURE = GATEWAY_HTTPS
CSRF_COOKIE_SECURE = GATEWAY_HTTPS
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = GATEWAY_HTTPS
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if GATEWAY_HTTPS else None
SECURE_HSTS_SECONDS = env.int("GATEWAY_HSTS_SECONDS", default=31536000 if GATEWAY_HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = GATEWAY_HTTPS
SECURE_HSTS_PRELOAD = env.bool("GATEWAY_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("GATEWAY_MAX_BODY_BYTES", default=8 * 1024 * 1024)
SILENCED_SYSTEM_CHECKS = [
    # W021: HSTS preload is a commitment to the browsers' preload list that only the
    # operator can make for their domain; GATEWAY_HSTS_PRELOAD=true opts in.
    "security.W021",
]

# Login brute force (the admin's and the chat page's): 5 failed passwords for one
# username from one address lock that pair out for 15 minutes; a success resets the
# count. Attempts are kept in the database, so every process shares them. Behind a
# reverse proxy, let the ASGI server trust its forwarded headers (uvicorn
# --forwarded-allow-ips) so REMOTE_ADDR is the client's address, not the proxy's.
AXES_FAILURE_LIMIT = env.int("GATEWAY_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("GATEWAY_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True

# Content-Security-Policy on every page we render (django-csp; a page that sets its own
# header, like /chat/, keeps it). Our templates and scripts need nothing inline.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
# Additions for pages we serve as their projects ship them (apps/core/csp.py): Swagger
# UI's page has an inline script and style; Redoc injects styles and runs a blob: worker.
GATEWAY_CSP_PATH_ADDITIONS = {
    "/api/docs/": {"script-src": [UNSAFE_INLINE], "style-src": [UNSAFE_INLINE]},
    "/api/redoc/": {
        "script-src": [UNSAFE_INLINE],
        "style-src": [UNSAFE_INLINE],
        "worker-src": [SELF, "blob:"],
    },
}

# --- REST framework and OpenAPI -------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.keys.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["apps.tenants.permissions.TenantRolePermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LLM Gateway management API",
    "DESCRIPTION": "Tenants, keys, providers and models of the gateway. "
    "The OpenAI-compatible inference API lives under /v1/.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # One name for the budget period choices (tenants' budget_period, budgets' period).
    "ENUM_NAME_OVERRIDES": {
        "BudgetPeriodEnum": "apps.tenants.models.BudgetPeriod",
        "GuardrailActionEnum": "apps.guardrails.api.serializers.ACTIONS",
    },
}

# --- the gateway ------------------------------------------------------------
GATEWAY_ENCRYPTION_KEYS = env.list("GATEWAY_ENCRYPTION_KEYS", default=[])
GATEWAY_ENCRYPTION_KEY_FILE = VAR_DIR / "encryption.key"
# How long a secret read from Vault / AWS Secrets Manager / Azure Key Vault is reused.
GATEWAY_SECRET_CACHE_SECONDS = env.float("GATEWAY_SECRET_CACHE_SECONDS", default=60.0)
GATEWAY_MAX_BODY_BYTES = DATA_UPLOAD_MAX_MEMORY_SIZE
GATEWAY_UPSTREAM_TIMEOUT = env.float("GATEWAY_UPSTREAM_TIMEOUT", default=60.0)
GATEWAY_UPSTREAM_MAX_CONNECTIONS = env.int("GATEWAY_UPSTREAM_MAX_CONNECTIONS", default=1000)
# How stale a process's view of keys and routing may get before it asks the database.
GATEWAY_CONFIG_POLL_SECONDS = env.float("GATEWAY_CONFIG_POLL_SECONDS", default=1.0)
GATEWAY_LOG_LEVEL = env.str("GATEWAY_LOG_LEVEL", default="INFO")
# Resilience: retries (backoff with full jitter), Retry-After honoured up to a cap, and
# circuit breakers per deployment.
GATEWAY_SIGNATURE_MAX_SKEW = env.int("GATEWAY_SIGNATURE_MAX_SKEW", default=300)
# Proxies whose X-Forwarded-For is believed for a key's IP allowlist (CIDRs).
GATEWAY_TRUSTED_PROXIES = env.list("GATEWAY_TRUSTED_PROXIES", default=[])
GATEWAY_MAX_JSON_DEPTH = env.int("GATEWAY_MAX_JSON_DEPTH", default=64)
GATEWAY_MAX_TEXT_CHARS = env.int("GATEWAY_MAX_TEXT_CHARS", default=4_000_000)
GATEWAY_DEFAULT_RETRIES = env.int("GATEWAY_DEFAULT_RETRIES", default=2)
GATEWAY_RETRY_BASE_SECONDS = env.float("GATEWAY_RETRY_BASE_SECONDS", default=0.25)
GATEWAY_RETRY_MAX_BACKOFF_SECONDS = env.float("GATEWAY_RETRY_MAX_BACKOFF_SECONDS", default=4.0)
GATEWAY_RETRY_AFTER_CAP_SECONDS = env.float("GATEWAY_RETRY_AFTER_CAP_SECONDS", default=10.0)
GATEWAY_CIRCUIT_FAILURES = env.int("GATEWAY_CIRCUIT_FAILURES", default=5)
GATEWAY_CIRCUIT_WINDOW_SECONDS = env.float("GATEWAY_CIRCUIT_WINDOW_SECONDS", default=60.0)
GATEWAY_CIRCUIT_COOLDOWN_SECONDS = env.float("GATEWAY_CIRCUIT_COOLDOWN_SECONDS", default=30.0)
GATEWAY_CIRCUIT_SYNC_SECONDS = env.float("GATEWAY_CIRCUIT_SYNC_SECONDS", default=0.5)
# Usage records: buffered in process, written in bulk (see apps/billing/recorder.py).
GATEWAY_USAGE_FLUSH_SECONDS = env.float("GATEWAY_USAGE_FLUSH_SECONDS", default=0.5)
GATEWAY_USAGE_BATCH = env.int("GATEWAY_USAGE_BATCH", default=500)
GATEWAY_USAGE_MAX_BUFFER = env.int("GATEWAY_USAGE_MAX_BUFFER", default=100_000)
# Output tokens a request may produce when it sets no max_tokens and its model no limit
# (what a budget reservation assumes).
GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS = env.int("GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS", default=4096)

# WebSocket chat (/ws/v1/chat/) and the live-traffic feed; docs/websocket.md explains each.
GATEWAY_WS_AUTH_TIMEOUT = env.float("GATEWAY_WS_AUTH_TIMEOUT", default=10.0)
GATEWAY_WS_IDLE_TIMEOUT = env.float("GATEWAY_WS_IDLE_TIMEOUT", default=300.0)
# How long one frame may wait for a client that stopped reading before the socket is dropped.
GATEWAY_WS_SEND_TIMEOUT = env.float("GATEWAY_WS_SEND_TIMEOUT", default=30.0)
GATEWAY_WS_MAX_FRAME_BYTES = env.int("GATEWAY_WS_MAX_FRAME_BYTES", default=1024 * 1024)
GATEWAY_WS_MAX_STREAMS = env.int("GATEWAY_WS_MAX_STREAMS", default=16)
GATEWAY_LIVE_FLUSH_SECONDS = env.float("GATEWAY_LIVE_FLUSH_SECONDS", default=0.2)
GATEWAY_LIVE_BUFFER = env.int("GATEWAY_LIVE_BUFFER", default=5000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "apps.core.logging.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
        }
    },
    "root": {"handlers": ["stdout"], "level": "WARNING"},
    "loggers": {
        "gateway": {"handlers": ["stdout"], "level": GATEWAY_LOG_LEVEL, "propagate": False},
        "django": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
    },
}
