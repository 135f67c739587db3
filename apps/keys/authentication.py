from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions

from apps.audit.context import audit_note_key
from apps.gateway.auth import presented_secret
from apps.keys.selectors import key_get_by_secret


class KeyUser(AnonymousUser):
    """The principal of a request authenticated by an API key (not a Django user)."""

    def __init__(self, key) -> None:
        super().__init__()
        self.key = key
        self.username = f"key:{key.prefix}"

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    @property
    def is_anonymous(self) -> bool:  # type: ignore[override]
        return False

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <key>`` for automation; scopes are checked by permissions."""

    def authenticate(self, request):
        headers = {k.lower(): v for k, v in request.headers.items()}
        secret = presented_secret(headers)
        if secret is None:
            return None
        key = key_get_by_secret(secret=secret)
        if key is None:
            raise exceptions.AuthenticationFailed(
                "Incorrect API key provided.", code="invalid_api_key"
            )
        if key.is_revoked:
            raise exceptions.AuthenticationFailed(
                "This API key has been revoked.", code="key_revoked"
            )
        if key.is_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.", code="key_expired")
        if not key.tenant.is_active:
            raise exceptions.AuthenticationFailed(
                "This key's tenant is disabled.", code="tenant_disabled"
            )
        audit_note_key(key)
        return KeyUser(key), key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
