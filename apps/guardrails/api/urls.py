from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from apps.guardrails.api.views import PolicyTryApi, PolicyViewSet

app_name = "guardrails-api"

router = SimpleRouter()
router.register("policies", PolicyViewSet, basename="policy")

urlpatterns = [
    *router.urls,
    path("policies/<int:pk>/try/", PolicyTryApi.as_view(), name="policy-try"),
]
