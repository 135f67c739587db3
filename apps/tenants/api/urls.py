from __future__ import annotations

from rest_framework.routers import SimpleRouter

from apps.tenants.api.views import TenantViewSet

app_name = "tenants-api"

router = SimpleRouter()
router.register("tenants", TenantViewSet, basename="tenant")

urlpatterns = router.urls
