"""WebSocket consumers: ``chat`` (streamed chat for frontends, /ws/v1/chat/) and
``live_traffic`` (the admin's live feed, /ws/admin/live/). The protocol, limits and close
codes are in docs/websocket.md; ``frames`` holds what both speak.
"""
