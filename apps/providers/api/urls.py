from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.providers.api.views import ModelViewSet, ProviderTestApi, ProviderViewSet

app_name = "providers-api"

router = SimpleRouter()
router.register("providers", ProviderViewSet, basename="provider")
router.register("models", ModelViewSet, basename="model")

urlpatterns = [
    *router.urls,
    path("providers/<int:pk>/test/", ProviderTestApi.as_view(), name="provider-test"),
]
