"""WebSocket URL patterns: chat streaming for frontends, the admin's live-traffic feed."""

from __future__ import annotations

from django.urls import re_path

from apps.gateway.consumers.chat import ChatConsumer
from apps.gateway.consumers.live_traffic import LiveTrafficConsumer

websocket_urlpatterns = [
    re_path(r"^ws/v1/chat/?$", ChatConsumer.as_asgi()),
    re_path(r"^ws/admin/live/?$", LiveTrafficConsumer.as_asgi()),
]
