"""The management API under /api/v1/: each app contributes its routes."""

from django.urls import include, path

urlpatterns = [
    path("", include("apps.tenants.api.urls")),
    path("", include("apps.keys.api.urls")),
    path("", include("apps.providers.api.urls")),
]
