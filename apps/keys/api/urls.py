from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.keys.api.views import KeyRevokeApi, KeyRotateApi, KeyViewSet

app_name = "keys-api"

router = SimpleRouter()
router.register("keys", KeyViewSet, basename="key")

urlpatterns = [
    *router.urls,
    path("keys/<int:pk>/revoke/", KeyRevokeApi.as_view(), name="key-revoke"),
    path("keys/<int:pk>/rotate/", KeyRotateApi.as_view(), name="key-rotate"),
]
