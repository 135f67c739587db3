"""The management API under /api/v1/: each app contributes its routes.

URL names are ``<app>-api:<entity>-<action>``, e.g. ``keys-api:key-list``.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, include, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt

from apps.core.api import error_body


@csrf_exempt  # it changes nothing; without this a POST would get Django's HTML CSRF page
def api_not_found(request: HttpRequest, unmatched: str = "") -> JsonResponse:
    """Unknown paths answer in the API's error shape, not with an HTML page.

    A path that only lacks its trailing slash is redirected with 308, which keeps the
    method and body (Django's APPEND_SLASH would send a 301 and lose a POST's body).
    """
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            query = request.META.get("QUERY_STRING", "")
            return HttpResponsePermanentRedirect(
                request.path + "/" + (f"?{query}" if query else ""), preserve_request=True
            )
    body = error_body(
        message=f"Unknown API endpoint: {request.method} {request.path}",
        type="not_found_error",
        param=None,
        code="not_found",
    )
    return JsonResponse(body, status=404)


urlpatterns = [
    path("", include("apps.tenants.api.urls")),
    path("", include("apps.keys.api.urls")),
    path("", include("apps.providers.api.urls")),
    path("", include("apps.billing.api.urls")),
    path("", include("apps.guardrails.api.urls")),
    re_path(r"^(?P<unmatched>.*)$", api_not_found, name="api-not-found"),
]
