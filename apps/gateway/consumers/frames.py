"""What the gateway's sockets say: frames, close codes, and why a stream ended early."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import orjson
from django.conf import settings

from apps.billing.pricing import Usage
from apps.core.errors import GatewayError


class CloseCode(IntEnum):
    """Why the server closed a socket (docs/websocket.md)."""

    NORMAL = 1000
    TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    IDLE_TIMEOUT = 4000
    SLOW_READER = 4001
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    AUTH_TIMEOUT = 4408


# Why a stream ended early, as request_finished records it (status 499).
CLIENT_CANCELLED = "client_cancelled"
CLIENT_DISCONNECTED = "client_disconnected"
CLIENT_TOO_SLOW = "client_too_slow"

MAX_ID_LENGTH = 128


class SocketGone(Exception):
    """The client left, or stopped reading: nothing more can be sent."""

    def __init__(self, reason: str = CLIENT_DISCONNECTED) -> None:
        super().__init__(reason)
        self.reason = reason


def dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def error_frame(exc: GatewayError, request_id: Any = None) -> dict[str, Any]:
    return {
        "type": "error",
        "id": request_id,
        "status": exc.status,
        "error": exc.to_dict()["error"],
    }


def frame_size(raw: str | bytes) -> int:
    if isinstance(raw, bytes):
        return len(raw)
    # A character is at most four UTF-8 bytes: encode only when the length is in doubt.
    limit = settings.GATEWAY_WS_MAX_FRAME_BYTES
    return len(raw) if len(raw) * 4 <= limit else len(raw.encode())


def usage_frame(usage: Usage) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens:
        frame["cached_tokens"] = usage.cached_tokens
    if usage.reasoning_tokens:
        frame["reasoning_tokens"] = usage.reasoning_tokens
    if usage.estimated:
        frame["estimated"] = True
    return frame


def frame_id(frame: dict[str, Any]) -> str | int | None:
    """The client's id, echoed on errors when it is a plain value."""
    value = frame.get("id")
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None
