"""A cheap closed-loop HTTP/1.1 load generator for the benchmark.

``--concurrency`` workers each own one keep-alive connection and send requests back to
back (the next one as soon as the previous answer is complete) until ``--requests``
requests have been sent in total or ``--duration`` seconds have passed. Built on a raw
asyncio ``Protocol`` and the ``httptools`` C response parser, on uvloop when installed:
a request costs the generator a few tens of microseconds of CPU.

Recorded per request: latency (request written → last byte of the response) and, for
streams, the time to first token (request written → the first SSE event whose
``choices[0].delta.content`` is non-empty). A response counts as an error when its status
is not 200, when a stream does not end with ``data: [DONE]``, when the connection
breaks, or after ``--timeout`` seconds.

Prints one JSON object on stdout: counts, wall time, throughput and latency / TTFT
percentiles in milliseconds (``--raw`` adds every sample).

Example::

    python bench/loadgen.py --url http://127.0.0.1:8000/v1/chat/completions \\
        --key gw-... --model bench-model --concurrency 10 --requests 2000 --stream
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import httptools
import orjson

PERCENTILES = (50, 90, 99)


class ClientProtocol(asyncio.Protocol):
    """One keep-alive connection; ``request()`` sends one request and awaits the full answer."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.lost: Exception | None = None
        self.started = 0.0
        self.ttft: float | None = None
        self.pending = b""  # SSE bytes not yet split into events (only until the first token)
        self.tail = b""  # the last bytes of the body (to check for [DONE])
        self.body: list[bytes] = []
        self.keep_alive = True

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed by the server")
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if not self.stream:
            self.body.append(body)
            return
        self.tail = (self.tail + body)[-64:]
        if self.ttft is not None:
            return
        self.pending += body
        while True:
            end = self.pending.find(b"\n\n")
            if end < 0:
                return
            event, self.pending = self.pending[:end], self.pending[end + 2 :]
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            try:
                chunk = orjson.loads(event[6:])
                content = chunk["choices"][0]["delta"].get("content")
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                continue
            if content:
                self.ttft = time.perf_counter() - self.started
                self.pending = b""
                return

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())

    # the client side
    def request(self, data: bytes) -> asyncio.Future:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.ttft = None
        self.pending = self.tail = b""
        self.body = []
        self.started = time.perf_counter()
        self.transport.write(data)
        return self.waiter


def build_request(
    url: str, *, key: str | None, model: str, stream: bool, include_usage: bool, prompt: str
) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    payload: dict = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 64,
    }
    if stream:
        payload["stream"] = True
        if include_usage:
            payload["stream_options"] = {"include_usage": True}
    body = orjson.dumps(payload)
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"host: {host}:{port}",
        "user-agent: bench-loadgen/1",
        "content-type: application/json",
        "accept: text/event-stream" if stream else "accept: application/json",
        f"content-length: {len(body)}",
    ]
    if key:
        lines.append(f"authorization: Bearer {key}")
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    out = {f"p{p}": _ms(percentile(ordered, p)) for p in PERCENTILES}
    out["mean"] = _ms(sum(ordered) / len(ordered)) if ordered else None
    out["min"] = _ms(ordered[0]) if ordered else None
    out["max"] = _ms(ordered[-1]) if ordered else None
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Budget:
    """Hands out requests to workers until the count or the time runs out."""

    def __init__(self, requests: int | None, duration: float | None) -> None:
        self.left = requests
        self.deadline = time.perf_counter() + duration if duration else None

    def take(self) -> bool:
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return False
        if self.left is not None:
            if self.left <= 0:
                return False
            self.left -= 1
        return True


async def worker(
    host: str,
    port: int,
    data: bytes,
    stream: bool,
    budget: Budget,
    request_timeout: float,
    latencies: list[float],
    ttfts: list[float],
    errors: Counter,
    finished: list[float],
) -> None:
    loop = asyncio.get_running_loop()
    proto: ClientProtocol | None = None
    try:
        while budget.take():
            if proto is None or proto.transport is None or not proto.keep_alive:
                if proto is not None and proto.transport is not None:
                    proto.transport.close()
                try:
                    _, proto = await loop.create_connection(
                        lambda: ClientProtocol(stream), host, port
                    )
                except OSError as exc:
                    errors[f"connect:{type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
            fut = proto.request(data)
            timer = loop.call_later(
                request_timeout,
                lambda f=fut: f.done() or f.set_exception(TimeoutError("request timed out")),
            )
            try:
                status = await fut
            except Exception as exc:
                errors[type(exc).__name__] += 1
                if proto.transport is not None:
                    proto.transport.close()
                proto = None
                continue
            finally:
                timer.cancel()
            elapsed = time.perf_counter() - proto.started
            if status != 200:
                errors[f"http_{status}"] += 1
                continue
            if stream:
                if not proto.tail.endswith(b"data: [DONE]\n\n"):
                    errors["incomplete_stream"] += 1
                    continue
                if proto.ttft is None:
                    errors["no_content_chunk"] += 1
                    continue
                ttfts.append(proto.ttft)
            elif not proto.body:
                errors["empty_body"] += 1
                continue
            latencies.append(elapsed)
            finished.append(proto.started + elapsed)
    finally:
        if proto is not None and proto.transport is not None:
            proto.transport.close()


async def run(args: argparse.Namespace) -> dict:
    host, port, data = build_request(
        args.url,
        key=args.key,
        model=args.model,
        stream=args.stream,
        include_usage=args.include_usage,
        prompt=args.prompt,
    )
    latencies: list[float] = []
    ttfts: list[float] = []
    errors: Counter = Counter()
    finished: list[float] = []
    budget = Budget(args.requests if not args.duration else None, args.duration)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await asyncio.gather(
        *(
            worker(
                host,
                port,
                data,
                args.stream,
                budget,
                args.timeout,
                latencies,
                ttfts,
                errors,
                finished,
            )
            for _ in range(args.concurrency)
        )
    )
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    done = len(latencies)
    result = {
        "url": args.url,
        "stream": args.stream,
        "concurrency": args.concurrency,
        "ok": done,
        "errors": dict(errors),
        "wall_s": round(wall, 4),
        "rps": round(done / wall, 1) if wall > 0 else None,
        "latency_ms": summary(latencies),
        "ttft_ms": summary(ttfts) if args.stream else None,
        "loadgen_cpu_ms_per_request": round(cpu * 1000 / done, 4) if done else None,
    }
    if args.raw:
        result["raw_latency_ms"] = [round(x * 1000, 4) for x in latencies]
        result["raw_ttft_ms"] = [round(x * 1000, 4) for x in ttfts]
        result["raw_finished_s"] = [round(t - started, 6) for t in finished]
        result["raw_perf_counter_start"] = started  # CLOCK_MONOTONIC: comparable across processes
    return result


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", required=True, help="e.g. http://127.0.0.1:8000/v1/chat/completions"
    )
    parser.add_argument("--key", help="gateway key (sent as Authorization: Bearer)")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--concurrency", "-c", type=int, default=1)
    parser.add_argument("--requests", "-n", type=int, default=1000)
    parser.add_argument("--duration", "-d", type=float, help="seconds; overrides --requests")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument(
        "--include-usage", action="store_true", help="send stream_options.include_usage"
    )
    parser.add_argument("--prompt", default="Say hello to the benchmark.")
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--raw", action="store_true", help="include every sample in the output")
    args = parser.parse_args(argv)
    install_uvloop()
    result = asyncio.run(run(args))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
