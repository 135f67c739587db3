"""The Content-Security-Policy header: django-csp's, plus what a few pages need.

``CONTENT_SECURITY_POLICY`` in settings is the policy of every page. Two additions are
made per request:

- ``GATEWAY_CSP_PATH_ADDITIONS`` extends it for pages we serve as their projects ship
  them (Swagger UI, Redoc), matched by path prefix;
- ``connect-src`` names this host's ``ws://`` and ``wss://`` origins, for the pages that
  open a WebSocket (older browsers do not count WebSockets as ``'self'``).
"""

from __future__ import annotations

from typing import Any

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if report_only:
            return parts
        additions: dict[str, list[Any]] = {}
        for prefix, directives in getattr(settings, "GATEWAY_CSP_PATH_ADDITIONS", {}).items():
            if request.path_info.startswith(prefix):
                for name, values in directives.items():
                    additions.setdefault(name, []).extend(values)
        try:
            host = request.get_host()
        except DisallowedHost:
            host = ""
        if host:
            additions.setdefault("connect-src", []).extend([f"ws://{host}", f"wss://{host}"])
        if additions:
            merged = dict(parts.update or {})
            for name, values in additions.items():
                merged[name] = [*merged.get(name, []), *values]
            parts.update = merged
        return parts
