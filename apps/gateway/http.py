"""A lean ASGI front for `/v1/*`: no per-request thread hops, no Django middleware.

Django's async handler hops to a thread several times per request (connection
clean-up, signals); for a relay those hops cost more than the work. This app routes
`/v1/*` itself and hands everything else to Django unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from apps.core.errors import GatewayError, MethodNotAllowed, NotFound, PayloadTooLarge
from apps.gateway.validation import max_body_bytes

logger = logging.getLogger("gateway.http")

_REQUEST_ID = re.compile(r"^[\w.:@/+=-]{1,128}$")


class ClientDisconnected(Exception):
    pass


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    client: str | None
    body: bytes
    request_id: str
    params: dict[str, str] = field(default_factory=dict)
    path_with_query: str = ""  # as the client sent it (what request signatures cover)


After = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    after: After | None = None  # runs once the response is sent (accounting)


@dataclass(slots=True)
class StreamingResponse:
    body: AsyncIterator[bytes]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/event-stream; charset=utf-8"
    after: After | None = None


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(status=status, body=orjson.dumps(payload), headers=headers or {})


def error_response(
    exc: GatewayError, request_id: str | None = None, *, after: After | None = None
) -> Response:
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("www-authenticate", 'Bearer realm="gateway"')
    if request_id:
        headers["x-request-id"] = request_id
    response = json_response(exc.to_dict(), exc.status, headers)
    response.after = after
    return response


def request_id_from(headers: dict[str, str]) -> str:
    given = headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return "req_" + uuid.uuid4().hex


def _encode_headers(response: Response | StreamingResponse) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", response.content_type.encode())]
    if isinstance(response, Response):
        raw.append((b"content-length", str(len(response.body)).encode()))
    else:
        raw.extend([(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")])
    for name, value in response.headers.items():
        raw.append((name.lower().encode("latin-1"), str(value).encode("latin-1", "replace")))
    return raw


class Router:
    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._prefix: list[tuple[str, str, dict[str, Handler]]] = []

    def route(
        self, path: str, method: str, *, param: str | None = None
    ) -> Callable[[Handler], Handler]:
        """Register a handler; with ``param`` the rest of the path after ``path`` is that parameter."""

        def decorator(handler: Handler) -> Handler:
            if param:
                for prefix, _name, methods in self._prefix:
                    if prefix == path:
                        methods[method] = handler
                        break
                else:
                    self._prefix.append((path, param, {method: handler}))
            else:
                self._exact.setdefault(path, {})[method] = handler
            return handler

        return decorator

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        methods = self._exact.get(path.rstrip("/") or path)
        params: dict[str, str] = {}
        if methods is None:
            for prefix, name, candidates in self._prefix:
                if path.startswith(prefix) and len(path) > len(prefix):
                    methods, params = candidates, {name: path[len(prefix) :]}
                    break
        if methods is None:
            raise NotFound(f"Unknown endpoint: {method} {path}", code="unknown_url")
        handler = methods.get(method)
        if handler is None:
            raise MethodNotAllowed(
                f"{method} is not allowed on {path}; use {', '.join(sorted(methods))}.",
                headers={"allow": ", ".join(sorted(methods))},
            )
        return handler, params


def _path_with_query(scope: dict) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


async def read_body(receive: Callable, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_disconnect(receive: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class GatewayASGI:
    """Serves `/v1/*` with ``router``; passes every other request to ``fallback``."""

    def __init__(self, router: Router, fallback: Callable, prefix: str = "/v1") -> None:
        self.router = router
        self.fallback = fallback
        self.prefix = prefix

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        path = scope["path"]
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.fallback(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = request_id_from(headers)
        try:
            handler, params = self.router.match(scope["method"], path)
            limit = max_body_bytes()
            declared = headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
            body = await read_body(receive, limit)
        except ClientDisconnected:
            return
        except GatewayError as exc:
            await self._send(send, error_response(exc, request_id))
            return
        client = scope.get("client")
        request = Request(
            method=scope["method"],
            path=path,
            headers=headers,
            client=client[0] if client else None,
            body=body,
            request_id=request_id,
            params=params,
            path_with_query=_path_with_query(scope),
        )
        # The handler runs beside a watcher: a client that goes away cancels the work,
        # which closes the upstream request.
        work = asyncio.ensure_future(self._handle(handler, request, send))
        watcher = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((work, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not work.done():
                work.cancel()
            watcher.cancel()
            await asyncio.gather(work, watcher, return_exceptions=True)

    async def _handle(self, handler: Handler, request: Request, send: Callable) -> None:
        try:
            response = await handler(request)
        except GatewayError as exc:
            response = error_response(exc, request.request_id)
        except Exception:
            logger.exception(
                "unhandled error", extra={"request_id": request.request_id, "path": request.path}
            )
            response = error_response(
                GatewayError(
                    "The gateway hit an internal error; it has been logged.", code="internal_error"
                ),
                request.request_id,
            )
        response.headers.setdefault("x-request-id", request.request_id)
        try:
            await self._send(send, response)
        finally:
            if response.after is not None:
                # Shielded: a client that leaves must not cut accounting short.
                await asyncio.shield(response.after())

    async def _send(self, send: Callable, response: Response | StreamingResponse) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": _encode_headers(response),
            }
        )
        if isinstance(response, Response):
            await send({"type": "http.response.body", "body": response.body})
            return
        async for chunk in response.body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
