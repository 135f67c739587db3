"""Attribute changes made while serving a request to its user and surface."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.audit.context import audit_context
from apps.audit.models import Source

API_PREFIX = "/api/"


def _client_ip(request: HttpRequest) -> str | None:
    """The peer's address as the server saw it (a proxy's, unless the server trusts it)."""
    try:
        return str(ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")))
    except ValueError:
        return None


class AuditContextMiddleware:
    """``/api/…`` is the ``api`` source, every other page (the admin, its dashboards) ``admin``.

    Place it after ``AuthenticationMiddleware``; the user is read when a change is
    recorded, so DRF's key or session authentication inside the view is seen too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        source = Source.API if request.path_info.startswith(API_PREFIX) else Source.ADMIN
        with audit_context(
            source=source,
            request=request,
            request_id=request.headers.get("x-request-id", "")[:128],
            ip=_client_ip(request),
        ):
            return self.get_response(request)
