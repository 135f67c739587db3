"""``/ws/v1/chat/``: streamed chat for frontends.

A chat socket authenticates (session or key), then relays: each ``chat.request`` runs as
its own task through the same pipeline and accounting as the SSE path of
``/v1/chat/completions``, so several answers stream side by side.

Backpressure: frames go straight to the ASGI server's ``send``, which waits while the
connection's write buffer is full; a stream task that waits there stops reading from the
provider, so a slow reader holds one buffer's worth of memory, not the whole answer. A
frame that cannot be delivered within ``GATEWAY_WS_SEND_TIMEOUT`` ends the socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import uuid
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
from apps.gateway import pipeline
from apps.gateway.accounting import request_finished
from apps.gateway.auth import authenticate, client_ip
from apps.gateway.consumers.frames import (
    CLIENT_CANCELLED,
    CLIENT_DISCONNECTED,
    CLIENT_TOO_SLOW,
    MAX_ID_LENGTH,
    CloseCode,
    SocketGone,
    dumps,
    error_frame,
    frame_id,
    frame_size,
    usage_frame,
)
from apps.gateway.http import Request
from apps.gateway.pipeline import CallContext
from apps.gateway.principals import SessionTenant, session_principal, session_tenants
from apps.gateway.validation import validate_chat
from apps.keys.selectors import KeyInfo

logger = logging.getLogger("gateway.ws")
_accounting: set[asyncio.Task] = set()


def _account(ctx: CallContext, status: int, error_code: str | None) -> asyncio.Task:
    """request_finished in its own task: a second cancellation cannot cut it short."""
    task = asyncio.ensure_future(request_finished(ctx, status=status, error_code=error_code))
    _accounting.add(task)
    task.add_done_callback(_accounting.discard)
    return task


def _ip_in(address: str | None, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address) if address else None
    except ValueError:
        return False
    return ip is not None and any(ip in network for network in networks)


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex


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
        except Exception:
            # A bug or a backend outage (database, cache): say so, and end the socket.
            logger.exception("websocket frame failed")
            await self._fail(
                GatewayError("Internal error; reconnect and retry.", code="internal_error"),
                close=CloseCode.INTERNAL_ERROR,
            )

    async def _handle(self, raw: str | bytes) -> None:
        if frame_size(raw) > settings.GATEWAY_WS_MAX_FRAME_BYTES:
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
                error_frame(
                    InvalidRequest(f"The frame is not valid JSON: {exc}", code="invalid_json")
                )
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
                    frame_id(frame),
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
                    frame_id(frame),
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
            if wanted is not None:
                message, code = (
                    f"You are not a member of an active tenant {wanted!r}.",
                    "tenant_forbidden",
                )
            elif tenants:
                message, code = (
                    "You belong to several tenants: choose one with 'tenant'.",
                    "tenant_required",
                )
            else:
                message, code = (
                    "Your account belongs to no active tenant; use an API key.",
                    "no_tenant",
                )
            await self._fail(PermissionDenied(message, param="tenant", code=code))
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
                    frame_id(frame),
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
        task = asyncio.create_task(self._stream(rid, body, key), name=f"ws-chat-{rid}")
        task.add_done_callback(lambda done: self._never_started(rid, done))
        self.streams[rid] = task

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
            await self._fail(exc, request_id=frame_id(frame))
            return
        routes = await pipeline.models_visible(key)
        await self._send_frame(
            {
                "type": "models",
                "id": frame_id(frame),
                "data": [pipeline.model_object(route) for route in routes],
            }
        )

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self._send_frame({"type": "pong", "id": frame_id(frame)})

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

    async def gateway_frame(self, message: dict[str, Any]) -> None:
        await self._send_quietly(message["frame"])

    # --- streams ---------------------------------------------------------------
    async def _stream(self, rid: str, body: dict[str, Any], key: KeyInfo) -> None:
        """One chat.request, start to finish: the WebSocket twin of the SSE path.

        It ends with exactly one frame for ``rid``: ``chat.done`` (also after a
        ``chat.cancel``, with ``finish_reason: "cancelled"``) or ``error``; none when the
        socket is gone. ``request_finished`` runs exactly once, and before that last
        frame is sent, so what the client sees has been accounted for.
        """
        ctx = CallContext(
            request_id=_request_id(), key=key, requested_model=body["model"], stream=True
        )
        status, error_code = 200, None
        final: dict[str, Any] | None = None
        opened: pipeline.OpenStream | None = None
        finish_reason: str | None = None
        reraise = False
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
                    if not delta:
                        continue
                    if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
                        ctx.streamed_chunks += 1
                    await self._send_frame(
                        {
                            "type": "chat.delta",
                            "id": rid,
                            "index": choice.get("index", 0),
                            "delta": delta,
                        }
                    )
            final = {"type": "chat.done"}
        except GatewayError as exc:
            status, error_code = exc.status, exc.code
            final = error_frame(exc, rid)
        except SocketGone as exc:
            status, error_code = 499, exc.reason
        except asyncio.CancelledError:
            status, error_code = 499, self.cancel_reasons.get(rid, CLIENT_DISCONNECTED)
            if error_code != CLIENT_CANCELLED:
                reraise = True
                raise
            # The client asked for this cancellation; the task carries on to report it.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            finish_reason, final = "cancelled", {"type": "chat.done"}
        except Exception as exc:
            logger.exception("websocket stream failed", extra={"request_id": ctx.request_id})
            status, error_code = 500, "internal_error"
            final = error_frame(GatewayError(f"Internal error: {type(exc).__name__}"), rid)
        finally:
            try:
                if opened is not None:
                    await opened.aclose()
            finally:
                self.streams.pop(rid, None)
                self.cancel_reasons.pop(rid, None)
                self.last_activity = time.monotonic()
                accounted = _account(ctx, status, error_code)
                if not reraise:
                    await asyncio.shield(accounted)
        if final is None:
            return
        if final["type"] == "chat.done":
            cost = ctx.cost
            final.update(
                id=rid,
                model=ctx.route.name if ctx.route else None,
                finish_reason=finish_reason,
                usage=usage_frame(ctx.final_usage()),
                cost_usd=f"{cost:.8f}" if cost is not None else None,
            )
        final["request_id"] = ctx.request_id
        await self._send_quietly(final)

    def _never_started(self, rid: str, task: asyncio.Task) -> None:
        """A task cancelled before its first step never ran ``_stream``: nothing reached
        the pipeline, but the client still gets the one final frame it was promised."""
        if self.streams.get(rid) is not task:
            return
        del self.streams[rid]
        if self.cancel_reasons.pop(rid, None) == CLIENT_CANCELLED and not self.closed:
            frame = {"type": "chat.done", "id": rid, "finish_reason": "cancelled", "usage": None}
            self.inbox.put_nowait({"type": "gateway.frame", "frame": frame})

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
        """The key checks of the HTTP path: key, scope, tenant, IP allowlist; no signatures."""
        info = await authenticate({"authorization": f"Bearer {secret}"})
        if info.ip_networks:
            ip = client_ip(self._upgrade_request())
            if not _ip_in(ip, info.ip_networks):
                raise PermissionDenied(
                    f"This key may not be used from {ip or 'an unknown address'}.",
                    code="ip_not_allowed",
                )
        if info.require_signature:
            raise PermissionDenied(
                "This key requires signed requests, which WebSocket frames cannot carry; "
                "use the HTTP API.",
                code="signature_required",
            )
        return info

    def _upgrade_request(self) -> Request:
        """The upgrade request, in the shape the HTTP path's helpers read."""
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in self.scope.get("headers", ())
        }
        client = self.scope.get("client")
        return Request(
            method="GET",
            path=self.scope.get("path", ""),
            headers=headers,
            client=client[0] if client else None,
            body=b"",
            request_id="",
        )

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
        data = dumps(frame)
        try:
            async with asyncio.timeout(settings.GATEWAY_WS_SEND_TIMEOUT):
                await self.send(text_data=data)
        except TimeoutError:
            self._post_close(CloseCode.SLOW_READER)
            raise SocketGone(CLIENT_TOO_SLOW)
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
