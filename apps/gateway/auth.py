from __future__ import annotations

import ipaddress
import time
from functools import cache

from django.conf import settings

from apps.core.errors import AuthenticationFailed, PermissionDenied
from apps.gateway import signing
from apps.gateway.http import Request
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


def client_ip(request: Request) -> str | None:
    """The caller's address; X-Forwarded-For counts only when it comes from a trusted proxy."""
    peer = request.client
    trusted = _trusted_proxies()
    if not peer or not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else peer


@cache
def _trusted_proxies() -> tuple:
    return tuple(ipaddress.ip_network(n, strict=False) for n in settings.GATEWAY_TRUSTED_PROXIES)


def _in(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


async def authenticate_request(request: Request, *, scope: str = Scope.INFERENCE) -> KeyInfo:
    """Key, IP allowlist and (when the key asks for it) the request signature."""
    info = await authenticate(request.headers, scope=scope)
    if info.ip_networks:
        ip = client_ip(request)
        if ip is None or not _in(ip, info.ip_networks):
            raise PermissionDenied(
                f"This key may not be used from {ip or 'an unknown address'}.",
                code="ip_not_allowed",
            )
    await signing.verify(
        info,
        headers=request.headers,
        method=request.method,
        path_with_query=request.path_with_query,
        body=request.body,
    )
    return info
