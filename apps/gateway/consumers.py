"""WebSocket consumers: streamed chat for frontends, and the admin's live-traffic feed.

The chat protocol, its limits and its close codes are written down in docs/websocket.md;
this module follows it. A chat socket authenticates (session or key), then relays: each
``chat.request`` runs as its own task through the same pipeline and accounting as the
SSE path of ``/v1/chat/completions``, so several answers stream side by side.

Backpressure: frames go straight to the ASGI server's ``send``, which waits while the
connection's write buffer is full; a stream task that waits there stops reading from the
provider, so a slow reader holds one buffer's worth of memory, not the whole answer. A
frame that cannot be delivered within ``GATEWAY_WS_SEND_TIMEOUT`` ends the socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from enum import IntEnum
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.utils import await_many_dispatch
from django.conf import settings

from apps.core.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
)
from apps.gateway import live, pipeline
from apps.gateway.accounting import request_finished
from apps.gateway.auth import authenticate
from apps.gateway.pipeline import CallContext
from apps.gateway.principals import SessionTenant, session_principal, session_tenants
from apps.gateway.validation import validate_chat
from apps.keys.selectors import KeyInfo
from apps.providers.tokens import estimate_prompt_tokens, estimate_tokens
from apps.tenants.access import access_for_user

logger = logging.getLogger("gateway.ws")


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


def _dumps(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


def error_frame(exc: GatewayError, request_id: Any = None) -> dict[str, Any]:
    return {
        "type": "error",
        "id": request_id,
        "status": exc.status,
        "error": exc.to_dict()["error"],
    }


def _frame_size(raw: str | bytes) -> int:
    if isinstance(raw, bytes):
        return len(raw)
    # A character is at most four UTF-8 bytes: encode only when the length is in doubt.
    limit = settings.GATEWAY_WS_MAX_FRAME_BYTES
    return len(raw) if len(raw) * 4 <= limit else len(raw.encode())


def _delta_tokens(delta: dict[str, Any]) -> int:
    """Tokens a delta carries, estimated: what a cancelled answer is charged for."""
    count = 0
    content = delta.get("content")
    if isinstance(content, str):
        count += estimate_tokens(content)
    for call in delta.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            count += estimate_tokens(str(function.get("name") or ""))
            count += estimate_tokens(str(function.get("arguments") or ""))
    return count


def _estimated_usage(body: dict[str, Any], completion_tokens: int) -> dict[str, Any]:
    prompt = estimate_prompt_tokens(body.get("messages") or [])
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
        "estimated": True,
    }


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


def _frame_id(frame: dict[str, Any]) -> str | int | None:
    """The client's id, echoed on errors when it is a plain value."""
    value = frame.get("id")
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


class ChatConsumer(AsyncWebsocketConsumer):
    """``/ws/v1/chat/``: authenticate, then relay chat streams, several at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.principal: KeyInfo | None = None
        self.api_key: str | None = None
        self.session_tenant: SessionTenant | None = None
        self.streams: dict[str, asyncio.Task] = {}
        self.cancel_reasons: dict[str, str] = {}
        self.closed = False
        self.close_posted = False
        self.last_activity = time.monotonic()
        self.watchdog: asyncio.Task | None = None
        self.handlers = {
            "auth": self.on_auth,
            "chat.request": self.on_chat_request,
            "chat.cancel": self.on_chat_cancel,
            "models.list": self.on_models_list,
            "ping": self.on_ping,
        }

    async def __call__(self, scope: dict, receive, send) -> None:
        # Like AsyncConsumer.__call__, with a local inbox in place of a channel layer: a
        # chat socket joins no group, and its timers post "gateway.close" events there so
        # closing happens in the consumer's own loop.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        try:
            await await_many_dispatch([receive, self.inbox.get], self.dispatch)
        except StopConsumer:
            pass
        finally:
            self.closed = True
            if self.watchdog is not None:
                self.watchdog.cancel()
            await self._stop_streams(CLIENT_DISCONNECTED)

    # --- connection ---------------------------------------------------------
    async def connect(self) -> None:
        await self.accept()
        self.watchdog = asyncio.create_task(self._watch(), name="ws-chat-watchdog")
        user = self._session_user()
        if user is None:
            return
        tenants = await database_sync_to_async(session_tenants)(user)
        if len(tenants) == 1:
            self._use_session(tenants[0])
            await self._send_quietly(self._auth_ok(tenants))
        else:
            await self._send_quietly(
                {
                    "type": "auth.required",
                    "user": user.get_username(),
                    "tenants": [t.name for t in tenants],
                }
            )

    async def disconnect(self, code: int) -> None:
        self.closed = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        await self._stop_streams(CLIENT_DISCONNECTED)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.last_activity = time.monotonic()
        raw = text_data if text_data is not None else bytes_data
        try:
            await self._handle(raw or "")
        except SocketGone:
            pass

    async def _handle(self, raw: str | bytes) -> None:
        if _frame_size(raw) > settings.GATEWAY_WS_MAX_FRAME_BYTES:
            await self._fail(
                PayloadTooLarge(
                    f"Frame larger than {settings.GATEWAY_WS_MAX_FRAME_BYTES} bytes.",
                    code="frame_too_large",
                ),
                close=CloseCode.TOO_LARGE,
            )
            return
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            await self._send_frame(
                error_frame(InvalidRequest(f"The frame is not valid JSON: {exc}", code="invalid_json"))
            )
            return
        if not isinstance(frame, dict):
            await self._send_frame(
                error_frame(InvalidRequest("A frame must be a JSON object.", code="invalid_json"))
            )
            return
        kind = frame.get("type")
        handler = self.handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            await self._send_frame(
                error_frame(
                    InvalidRequest(
                        f"Unknown frame type {kind!r}; expected one of {', '.join(self.handlers)}.",
                        param="type",
                        code="unknown_type",
                    ),
                    _frame_id(frame),
                )
            )
            return
        if self.principal is None and kind not in ("auth", "ping"):
            await self._send_frame(
                error_frame(
                    AuthenticationFailed(
                        'Authenticate first: {"type": "auth", "api_key": "..."}.',
                        code="unauthenticated",
                    ),
                    _frame_id(frame),
                )
            )
            return
        await handler(frame)

    # --- one handler per frame type ---------------------------------------------
    async def on_auth(self, frame: dict[str, Any]) -> None:
        api_key = frame.get("api_key")
        if api_key is not None:
            if not isinstance(api_key, str) or not api_key.strip():
                await self._fail(AuthenticationFailed("'api_key' must be a non-empty string."))
                return
            try:
                info = await self._authenticate_key(api_key.strip())
            except GatewayError as exc:
                await self._fail(exc)
                return
            self.principal, self.api_key, self.session_tenant = info, api_key.strip(), None
            await self._send_frame(
                {
                    "type": "auth.ok",
                    "principal": "key",
                    "tenant": info.tenant_name,
                    "key_prefix": info.prefix,
                }
            )
            return
        user = self._session_user()
        if user is None:
            await self._fail(
                AuthenticationFailed(
                    "Missing API key: send it as 'api_key', or sign in first.",
                    code="missing_api_key",
                )
            )
            return
        tenants = await database_sync_to_async(session_tenants)(user)
        wanted = frame.get("tenant")
        if wanted is None and len(tenants) == 1:
            chosen = tenants[0]
        else:
            chosen = next((t for t in tenants if t.name == wanted), None)
        if chosen is None:
            await self._fail(
                PermissionDenied(
                    "Choose one of your tenants with 'tenant'."
                    if wanted is None and tenants
                    else f"You are not a member of an active tenant named {wanted!r}."
                    if wanted is not None
                    else "Your account belongs to no active tenant; use an API key.",
                    param="tenant",
                    code="tenant_required" if wanted is None and tenants else "tenant_forbidden",
                )
            )
            return
        self._use_session(chosen)
        await self._send_frame(self._auth_ok(tenants))

    async def on_chat_request(self, frame: dict[str, Any]) -> None:
        rid = frame.get("id")
        if not isinstance(rid, str) or not 0 < len(rid) <= MAX_ID_LENGTH:
            await self._send_frame(
                error_frame(
                    InvalidRequest(
                        f"'id' must be a string of 1 to {MAX_ID_LENGTH} characters.",
                        param="id",
                        code="invalid_id",
                    ),
                    _frame_id(frame),
                )
            )
            return
        if rid in self.streams:
            await self._send_frame(
                error_frame(
                    InvalidRequest(
                        f"A request with id {rid!r} is already in flight.",
                        param="id",
                        code="duplicate_id",
                    ),
                    rid,
                )
            )
            return
        if len(self.streams) >= settings.GATEWAY_WS_MAX_STREAMS:
            await self._send_frame(
                error_frame(
                    RateLimited(
                        f"At most {settings.GATEWAY_WS_MAX_STREAMS} requests may be in flight "
                        "on one socket.",
                        code="too_many_streams",
                    ),
                    rid,
                )
            )
            return
        try:
            key = await self._current_principal()
        except GatewayError as exc:
            await self._fail(exc, request_id=rid)
            return
        body = {name: value for name, value in frame.items() if name not in ("type", "id")}
        # Always a stream; usage is collected whatever the client asks.
        body["stream"] = True
        body.pop("stream_options", None)
        try:
            validate_chat(body)
        except GatewayError as exc:
            await self._send_frame(error_frame(exc, rid))
            return
        self.streams[rid] = asyncio.create_task(self._stream(rid, body, key), name=f"ws-chat-{rid}")

    async def on_chat_cancel(self, frame: dict[str, Any]) -> None:
        # Idempotent: cancelling a finished or unknown request is not an error.
        rid = frame.get("id")
        task = self.streams.get(rid) if isinstance(rid, str) else None
        if task is not None and not task.done():
            self.cancel_reasons.setdefault(rid, CLIENT_CANCELLED)
            task.cancel()

    async def on_models_list(self, frame: dict[str, Any]) -> None:
        try:
            key = await self._current_principal()
        except GatewayError as exc:
            await self._fail(exc, request_id=_frame_id(frame))
            return
        routes = await pipeline.models_visible(key)
        await self._send_frame(
            {
                "type": "models",
                "id": _frame_id(frame),
                "data": [pipeline.model_object(route) for route in routes],
            }
        )

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self._send_frame({"type": "pong", "id": _frame_id(frame)})

    # --- local events (posted by the watchdog and by stream tasks) -----------------
    async def gateway_close(self, message: dict[str, Any]) -> None:
        code = CloseCode(message["code"])
        if code == CloseCode.SLOW_READER:
            # Nothing reaches a client that does not read, a close frame included: end
            # the application and let the server drop the connection.
            self.closed = True
            await self._stop_streams(CLIENT_TOO_SLOW)
            raise StopConsumer
        if message.get("error"):
            await self._send_quietly(message["error"])
        await self._close(code)

    # --- streams ---------------------------------------------------------------
    async def _stream(self, rid: str, body: dict[str, Any], key: KeyInfo) -> None:
        """One chat.request, start to finish: the WebSocket twin of the SSE path."""
        ctx = CallContext(request_id=_request_id(), key=key, stream=True)
        status, error_code = 200, None
        final: dict[str, Any] | None = None
        opened: pipeline.OpenStream | None = None
        finish_reason: str | None = None
        completion_tokens = 0
        try:
            opened = await pipeline.open_stream(ctx, body)
            async for chunk in opened.chunks():
                usage = chunk.get("usage")
                if usage:
                    ctx.usage = usage
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if choice.get("finish_reason") and choice.get("index", 0) == 0:
                        finish_reason = choice["finish_reason"]
                    if delta:
                        completion_tokens += _delta_tokens(delta)
                        await self._send_frame(
                            {
                                "type": "chat.delta",
                                "id": rid,
                                "index": choice.get("index", 0),
                                "delta": delta,
                            }
                        )
        except GatewayError as exc:
            status, error_code = exc.status, exc.code
            final = error_frame(exc, rid)
        except SocketGone:
            status, error_code = 499, self.cancel_reasons.get(rid, CLIENT_DISCONNECTED)
        except asyncio.CancelledError:
            reason = self.cancel_reasons.get(rid, CLIENT_DISCONNECTED)
            status, error_code = 499, reason
            if reason != CLIENT_CANCELLED:
                raise
            # The client asked for this cancellation; the task carries on to report it.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            finish_reason = "cancelled"
        except Exception as exc:
            logger.exception("websocket stream failed", extra={"request_id": ctx.request_id})
            status, error_code = 500, "internal_error"
            final = error_frame(GatewayError(f"Internal error: {type(exc).__name__}"), rid)
        finally:
            try:
                if opened is not None:
                    await opened.aclose()
            finally:
                if ctx.usage is None and opened is not None:
                    # No usage from upstream (cancelled, failed mid-stream, or a provider
                    # that sends none): charge what was streamed, marked as estimated.
                    ctx.usage = _estimated_usage(body, completion_tokens)
                request_finished(ctx, endpoint="chat", status=status, error_code=error_code)
                self.streams.pop(rid, None)
                self.cancel_reasons.pop(rid, None)
                self.last_activity = time.monotonic()
        if final is None and status in (200, 499) and error_code != CLIENT_DISCONNECTED:
            if error_code == CLIENT_TOO_SLOW:
                return
            cost = ctx.cost
            final = {
                "type": "chat.done",
                "id": rid,
                "request_id": ctx.request_id,
                "model": ctx.route.name if ctx.route else None,
                "finish_reason": finish_reason,
                "usage": ctx.usage,
                "cost_usd": f"{cost:.8f}" if cost is not None else None,
            }
        if final is not None:
            final.setdefault("request_id", ctx.request_id)
            await self._send_quietly(final)

    async def _stop_streams(self, reason: str) -> None:
        tasks = []
        for rid, task in list(self.streams.items()):
            if not task.done():
                self.cancel_reasons.setdefault(rid, reason)
                task.cancel()
                tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- authentication --------------------------------------------------------
    def _session_user(self):
        user = self.scope.get("user")
        if user is not None and user.is_authenticated and user.is_active:
            return user
        return None

    def _use_session(self, tenant: SessionTenant) -> None:
        self.session_tenant, self.api_key = tenant, None
        self.principal = session_principal(self._session_user(), tenant)

    def _auth_ok(self, tenants: list[SessionTenant]) -> dict[str, Any]:
        user = self._session_user()
        return {
            "type": "auth.ok",
            "principal": "session",
            "user": user.get_username() if user else None,
            "tenant": self.session_tenant.name if self.session_tenant else None,
            "tenants": [t.name for t in tenants],
        }

    async def _authenticate_key(self, secret: str) -> KeyInfo:
        info = await authenticate({"authorization": f"Bearer {secret}"})
        if info.require_signature:
            raise PermissionDenied(
                "This key requires signed requests, which WebSocket frames cannot carry; "
                "use the HTTP API.",
                code="signature_required",
            )
        return info

    async def _current_principal(self) -> KeyInfo:
        """The principal, checked again: a key revoked or a membership removed mid-socket counts."""
        if self.api_key is not None:
            self.principal = await self._authenticate_key(self.api_key)
        elif self.session_tenant is not None:
            user = self._session_user()
            tenants = await database_sync_to_async(session_tenants)(user) if user else []
            if all(t.id != self.session_tenant.id for t in tenants):
                raise PermissionDenied(
                    "You no longer have access to this tenant.", code="tenant_forbidden"
                )
        assert self.principal is not None
        return self.principal

    # --- sending and closing -------------------------------------------------------
    async def _send_frame(self, frame: dict[str, Any]) -> None:
        if self.closed:
            raise SocketGone
        data = _dumps(frame)
        try:
            async with asyncio.timeout(settings.GATEWAY_WS_SEND_TIMEOUT):
                await self.send(text_data=data)
        except TimeoutError:
            self._post_close(CloseCode.SLOW_READER)
            raise SocketGone
        except (OSError, RuntimeError):
            # The server reports a connection that is gone (or already closing).
            self.closed = True
            raise SocketGone

    async def _send_quietly(self, frame: dict[str, Any]) -> None:
        try:
            await self._send_frame(frame)
        except SocketGone:
            pass

    async def _fail(
        self, exc: GatewayError, *, request_id: Any = None, close: CloseCode | None = None
    ) -> None:
        """Report an error that ends the socket, then close with the matching code."""
        if close is None:
            close = (
                CloseCode.UNAUTHENTICATED
                if isinstance(exc, AuthenticationFailed)
                else CloseCode.FORBIDDEN
                if isinstance(exc, PermissionDenied)
                else CloseCode.INTERNAL_ERROR
            )
        await self._send_quietly(error_frame(exc, request_id))
        await self._close(close)

    async def _close(self, code: CloseCode) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            async with asyncio.timeout(min(5.0, settings.GATEWAY_WS_SEND_TIMEOUT)):
                await self.close(int(code))
        except (TimeoutError, OSError, RuntimeError):
            await self._stop_streams(CLIENT_TOO_SLOW)
            raise StopConsumer

    def _post_close(self, code: CloseCode, error: dict[str, Any] | None = None) -> None:
        if not self.close_posted:
            self.close_posted = True
            self.inbox.put_nowait({"type": "gateway.close", "code": int(code), "error": error})

    async def _watch(self) -> None:
        """Close sockets that never authenticate, and authenticated ones left idle."""
        auth_deadline = time.monotonic() + settings.GATEWAY_WS_AUTH_TIMEOUT
        idle = settings.GATEWAY_WS_IDLE_TIMEOUT
        while not self.closed:
            now = time.monotonic()
            if self.principal is None:
                wait = auth_deadline - now
                if wait <= 0:
                    exc = AuthenticationFailed(
                        f"No authentication within {settings.GATEWAY_WS_AUTH_TIMEOUT:g} s.",
                        code="auth_timeout",
                    )
                    self._post_close(CloseCode.AUTH_TIMEOUT, error_frame(exc))
                    return
            elif self.streams:
                wait = idle
            else:
                wait = self.last_activity + idle - now
                if wait <= 0:
                    exc = GatewayError(f"Idle for {idle:g} s.", code="idle_timeout")
                    self._post_close(CloseCode.IDLE_TIMEOUT, error_frame(exc))
                    return
            await asyncio.sleep(wait)


class LiveTrafficConsumer(AsyncWebsocketConsumer):
    """``/ws/admin/live/``: staff only; finished requests from every process, as they come.

    Each user sees the tenants they may read (every tenant for superusers). A page that
    stops reading is dropped after ``GATEWAY_WS_SEND_TIMEOUT``; while it lags, the channel
    layer's bounded per-channel queue drops batches rather than growing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.access = None

    async def connect(self) -> None:
        await self.accept()
        user = self.scope.get("user")
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            exc = PermissionDenied("The live-traffic feed is for staff users.", code="staff_only")
            await self.send(text_data=_dumps(error_frame(exc)))
            await self.close(CloseCode.FORBIDDEN)
            return
        if self.channel_layer is None:
            await self.close(CloseCode.INTERNAL_ERROR)
            return
        self.access = await database_sync_to_async(access_for_user)(user)
        await self.channel_layer.group_add(live.GROUP, self.channel_name)
        await self.send(text_data=_dumps({"type": "live.hello", "server": live.SERVER}))

    async def disconnect(self, code: int) -> None:
        if self.access is not None and self.channel_layer is not None:
            await self.channel_layer.group_discard(live.GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The feed is one-way; a ping keeps proxies from closing an idle page.
        await self._send({"type": "pong"})

    async def live_batch(self, message: dict[str, Any]) -> None:
        access = self.access
        if access is None:
            return
        events = [e for e in message.get("events", ()) if access.can_read(e.get("tenant_id"))]
        if events:
            await self._send({"type": "live.batch", "events": events})

    async def _send(self, frame: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(settings.GATEWAY_WS_SEND_TIMEOUT):
                await self.send(text_data=_dumps(frame))
        except (TimeoutError, OSError, RuntimeError):
            raise StopConsumer
