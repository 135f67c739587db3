"""WebSocket URL patterns (the chat consumer arrives with the WebSocket feature)."""

websocket_urlpatterns: list = []
