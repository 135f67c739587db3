"""How drf-spectacular documents key authentication (imported by the keys views)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "apps.keys.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A gateway key with the management:read (GET) or "
            "management:write (writes) scope: `Authorization: Bearer gw-…`.",
        }
