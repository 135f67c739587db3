"""Secret references: ``env:NAME``, ``file:PATH``, a secret store, or a literal value.

Secret stores (:mod:`apps.core.secret_backends`): ``vault:mount/path#field``,
``aws-sm:secret-id#field`` and ``azure-kv:https://<vault>.vault.azure.net/<name>``.
Their answers are cached in the process for ``GATEWAY_SECRET_CACHE_SECONDS`` (60 s):
the gateway resolves credentials when it (re)loads its routing table, and a burst of
reloads must not become a burst of calls to the vault. ``env:`` and ``file:`` are read
every time (they are local and cheap).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from django.conf import settings

from apps.core import secret_backends

LOCAL_SCHEMES = ("env", "file")


class SecretReferenceError(ValueError):
    pass


def _scheme(value: str) -> str | None:
    scheme, sep, _ = value.partition(":")
    if sep and (scheme in LOCAL_SCHEMES or scheme in secret_backends.schemes()):
        return scheme
    return None


def is_reference(value: str) -> bool:
    """A reference names where the secret lives; any other value is the secret itself.

    A store's scheme counts even when its SDK is missing, so a ``vault:`` reference is
    never mistaken for (and stored as) a literal key.
    """
    return _scheme(value) is not None


def resolve(value: str) -> str:
    """The secret a value stands for; a literal stands for itself."""
    scheme = _scheme(value)
    if scheme == "env":
        name = value[4:]
        if name not in os.environ:
            raise SecretReferenceError(f"environment variable {name} is not set")
        return os.environ[name]
    if scheme == "file":
        path = Path(value[5:])
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SecretReferenceError(f"cannot read secret file {path}: {exc.strerror}") from exc
    if scheme is not None:
        return _resolve_remote(scheme, value)
    return value


# --- the cache in front of secret stores ---------------------------------------------------

_cache: dict[str, tuple[float, str]] = {}
_cache_lock = threading.Lock()


def _ttl() -> float:
    return float(getattr(settings, "GATEWAY_SECRET_CACHE_SECONDS", 60.0))


def _resolve_remote(scheme: str, value: str) -> str:
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(value)
    if hit is not None and hit[0] > now:
        return hit[1]
    try:
        secret = secret_backends.get(scheme).get(value[len(scheme) + 1 :])
    except secret_backends.SecretBackendError as exc:
        raise SecretReferenceError(str(exc)) from exc
    except Exception as exc:
        # Whatever an SDK raises, callers (the routing table) handle one error type: one
        # broken reference must not take the other providers down with it.
        raise SecretReferenceError(
            f"{scheme}: cannot resolve the reference: {type(exc).__name__}"
        ) from exc
    ttl = _ttl()
    if ttl > 0:
        with _cache_lock:
            _cache[value] = (now + ttl, secret)
    return secret


def clear_cache() -> None:
    """Forget cached secret-store answers (after a secret was rotated in the store)."""
    with _cache_lock:
        _cache.clear()
