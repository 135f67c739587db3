from __future__ import annotations

import time

from apps.core.errors import AuthenticationFailed, PermissionDenied
from apps.gateway.state import state
from apps.keys.models import Scope
from apps.keys.secrets import hash_secret
from apps.keys.selectors import KeyInfo


def presented_secret(headers: dict[str, str]) -> str | None:
    """The key from ``Authorization: Bearer`` or, as Azure clients send it, ``api-key``."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("api-key") or headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


async def authenticate(headers: dict[str, str], *, scope: str = Scope.INFERENCE) -> KeyInfo:
    secret = presented_secret(headers)
    if secret is None:
        raise AuthenticationFailed(
            "Missing API key. Send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    info = await state.key(hash_secret(secret))
    if info is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    if info.revoked:
        raise AuthenticationFailed("This API key has been revoked.", code="key_revoked")
    if info.expires_at is not None and info.expires_at <= time.time():
        raise AuthenticationFailed("This API key has expired.", code="key_expired")
    if not info.tenant_active:
        raise PermissionDenied("This key's tenant is disabled.", code="tenant_disabled")
    if scope not in info.scopes:
        raise PermissionDenied(f"This key lacks the '{scope}' scope.", code="insufficient_scope")
    return info
