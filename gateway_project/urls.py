from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from apps.gateway.health import healthz, readyz
from apps.gateway.metrics import metrics_view
from apps.gateway.pages import ChatLoginView, chat_page, live_traffic_page

urlpatterns = [
    # Before admin.site.urls, whose catch-all would answer first.
    path("admin/live-traffic/", live_traffic_page, name="live-traffic"),
    path("admin/billing/", include("apps.billing.urls")),
    path("admin/", admin.site.urls),
    path("chat/", chat_page, name="chat"),
    path("chat/login/", ChatLoginView.as_view(), name="chat-login"),
    path("chat/logout/", LogoutView.as_view(next_page="chat"), name="chat-logout"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include("apps.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
]
