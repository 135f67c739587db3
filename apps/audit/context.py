"""Who is acting, and through which surface: a context variable the audit trail reads.

Set by :class:`apps.audit.middleware.AuditContextMiddleware` for every Django request
(``admin`` or ``api``), refined by the API key authentication (``key:<prefix>``), and by
commands through :func:`audit_context` (``gateway_config`` uses ``config``). Anything
else (Celery tasks, migrations' data) is ``system``; an interactive ``manage.py shell``
is ``shell``.
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from apps.audit.models import Source

SHELL_COMMANDS = frozenset({"shell", "shell_plus", "dbshell"})


@dataclass
class AuditContext:
    actor: str = ""
    source: str = Source.SYSTEM
    user_id: int | None = None
    request: Any = None
    request_id: str = ""
    ip: str | None = None

    def who(self) -> tuple[str, int | None]:
        """(actor, user id), read from the request's user as late as possible.

        DRF authenticates inside the view, after the middleware ran; reading the user at
        the moment of the change sees whoever the API authenticated.
        """
        if self.actor:
            return self.actor, self.user_id
        user = getattr(self.request, "user", None) if self.request is not None else None
        key = getattr(user, "key", None)
        if key is not None and getattr(key, "prefix", None):
            return f"key:{key.prefix}", None
        if user is not None and user.is_authenticated:
            return user.get_username(), user.pk
        if self.request is not None:
            return "anonymous", None
        return Source.SYSTEM.value, None


def _process_default() -> AuditContext:
    command = sys.argv[1] if len(sys.argv) > 1 and sys.argv[0].endswith("manage.py") else ""
    if command in SHELL_COMMANDS:
        try:
            who = getpass.getuser()
        except Exception:  # no login name in some containers
            who = "unknown"
        return AuditContext(actor=f"shell:{who}", source=Source.SHELL)
    return AuditContext(actor=Source.SYSTEM.value, source=Source.SYSTEM)


_current: ContextVar[AuditContext | None] = ContextVar("gateway_audit_context", default=None)
_default: AuditContext | None = None


def current() -> AuditContext:
    global _default
    context = _current.get()
    if context is not None:
        return context
    if _default is None:
        _default = _process_default()
    return _default


@contextmanager
def audit_context(**fields: Any) -> Iterator[AuditContext]:
    """Attribute the changes made inside the block: ``audit_context(actor="config",
    source="config")``."""
    context = AuditContext(**fields)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def audit_note_key(key: Any) -> None:
    """The request is acting as an API key (called by the API's key authentication)."""
    context = _current.get()
    if context is not None and context.request is not None:
        context.actor, context.user_id, context.source = f"key:{key.prefix}", None, Source.API
