"""A very cheap OpenAI-compatible upstream for the benchmark.

Raw asyncio ``Protocol`` + the ``httptools`` C parser (both come with
``uvicorn[standard]``), on uvloop when installed: HTTP/1.1 with keep-alive, a few
tens of microseconds of CPU per request, so it is never the bottleneck.

Endpoints:

- ``POST /v1/chat/completions``: a ``chat.completion`` object; with ``"stream": true``
  a ``text/event-stream`` of ``--chunks`` content chunks (after a role chunk, before a
  finish chunk, a usage chunk when ``stream_options.include_usage`` is set, and
  ``data: [DONE]``), sent with chunked transfer encoding. ``--chunk-delay-ms`` spaces
  the chunks out; ``--latency-ms`` delays the first byte (a model's "thinking" time).
- ``GET /v1/models``: a model list.
- ``GET /health``: ``ok``.

Responses are built once per (model, stream, include_usage) and cached: a request costs
one parse of its JSON body and one ``transport.write``.

Run: ``python bench/fake_upstream.py --port 9100 [--chunks 20] [--chunk-delay-ms 0]``.
The process prints ``READY <port>`` on stdout once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass

import httptools
import orjson

CREATED = int(time.time())


@dataclass(frozen=True, slots=True)
class Config:
    chunks: int = 20
    chunk_delay: float = 0.0
    latency: float = 0.0
    prompt_tokens: int = 12


def _head(status: str, content_type: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 "
        + status.encode()
        + b"\r\ncontent-type: "
        + content_type
        + b"\r\nx-request-id: req_fake\r\n"
        + extra
    )


def plain(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return _head(status, content_type, b"content-length: %d\r\n\r\n" % len(body)) + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Responses:
    """Pre-rendered responses, keyed by what varies between requests."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._chat: dict[str, bytes] = {}
        self._stream: dict[tuple[str, bool], list[bytes]] = {}
        models = {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": CREATED, "owned_by": "fake"}
                for name in ("fake-model", "fake-model-large")
            ],
        }
        self.models = plain("200 OK", orjson.dumps(models))
        self.health = plain("200 OK", b"ok", b"text/plain")
        self.not_found = plain(
            "404 Not Found",
            orjson.dumps(
                {
                    "error": {
                        "message": "Unknown endpoint",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "unknown_url",
                    }
                }
            ),
        )
        self.bad_request = plain(
            "400 Bad Request",
            orjson.dumps(
                {
                    "error": {
                        "message": "The body is not a JSON object",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_json",
                    }
                }
            ),
        )

    def _words(self) -> list[str]:
        return [f" word{i}" for i in range(self.config.chunks)]

    def chat(self, model: str) -> bytes:
        cached = self._chat.get(model)
        if cached is None:
            words = self._words()
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(words).strip()},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": self.config.prompt_tokens,
                    "completion_tokens": len(words),
                    "total_tokens": self.config.prompt_tokens + len(words),
                },
            }
            cached = self._chat[model] = plain("200 OK", orjson.dumps(body))
        return cached

    def stream(self, model: str, include_usage: bool) -> list[bytes]:
        """Wire pieces: [head + role chunk, content chunk..., finish (+usage) + DONE + end]."""
        key = (model, include_usage)
        cached = self._stream.get(key)
        if cached is not None:
            return cached

        def event(choices: list, usage: object = None) -> bytes:
            chunk: dict = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            if include_usage:
                chunk["usage"] = usage
            return _chunk(b"data: " + orjson.dumps(chunk) + b"\n\n")

        def delta(content: dict, finish: str | None = None) -> list:
            return [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]

        words = self._words()
        head = _head("200 OK", b"text/event-stream", b"transfer-encoding: chunked\r\n\r\n")
        pieces = [head + event(delta({"role": "assistant", "content": ""}))]
        pieces += [event(delta({"content": word})) for word in words]
        tail = event(delta({}, "stop"))
        if include_usage:
            usage = {
                "prompt_tokens": self.config.prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": self.config.prompt_tokens + len(words),
            }
            tail += event([], usage)
        tail += _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        pieces.append(tail)
        self._stream[key] = pieces
        return pieces


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = ("body", "config", "parser", "responses", "transport", "url")

    def __init__(self, responses: Responses) -> None:
        self.responses = responses
        self.config = responses.config
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(self.responses.bad_request)
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        keep_alive = self.parser.should_keep_alive()
        if method == b"POST" and path == b"/v1/chat/completions":
            self.chat(keep_alive)
        elif method == b"GET" and path == b"/v1/models":
            self.reply(self.responses.models, keep_alive)
        elif method == b"GET" and path == b"/health":
            self.reply(self.responses.health, keep_alive)
        else:
            self.reply(self.responses.not_found, keep_alive)

    def reply(self, data: bytes, keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.config.latency:
            asyncio.get_running_loop().call_later(
                self.config.latency, self._write, data, keep_alive
            )
        else:
            self._write(data, keep_alive)

    def _write(self, data: bytes, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(data)
        if not keep_alive:
            self.transport.close()

    def chat(self, keep_alive: bool) -> None:
        try:
            body = orjson.loads(b"".join(self.body))
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            self.reply(self.responses.bad_request, keep_alive)
            return
        model = str(body.get("model") or "fake-model")
        if not body.get("stream"):
            self.reply(self.responses.chat(model), keep_alive)
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        pieces = self.responses.stream(model, include_usage)
        if not self.config.chunk_delay:
            self.reply(b"".join(pieces), keep_alive)
            return
        asyncio.get_running_loop().create_task(self._stream_slowly(pieces, keep_alive))

    async def _stream_slowly(self, pieces: list[bytes], keep_alive: bool) -> None:
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        for i, piece in enumerate(pieces):
            if self.transport is None or self.transport.is_closing():
                return
            if i:
                await asyncio.sleep(self.config.chunk_delay)
            if self.transport is None:
                return
            self.transport.write(piece)
        if not keep_alive and self.transport is not None:
            self.transport.close()


def install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve(host: str, port: int, config: Config) -> None:
    loop = asyncio.get_running_loop()
    responses = Responses(config)
    server = await loop.create_server(
        lambda: UpstreamProtocol(responses), host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    args = parser.parse_args(argv)
    loop_name = install_uvloop()
    config = Config(
        chunks=args.chunks, chunk_delay=args.chunk_delay_ms / 1000, latency=args.latency_ms / 1000
    )
    print(f"fake upstream: pid {os.getpid()}, {loop_name}, {config}", file=sys.stderr, flush=True)
    asyncio.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
