"""A fake OpenAI-compatible upstream speaking the real wire format, in a background thread.

Behaviour is scripted per model name, so one server serves many tests:
- ``slow-*``: streams ``chunks`` words with ``delay`` seconds between them;
- ``status-NNN``: answers with that HTTP status and an OpenAI error body;
- ``hang``: never answers (for deadlines);
- ``flaky-N-<tag>``: the first N requests get 429 with ``Retry-After: 1``, then success;
- ``toggle-<tag>``: 500 while ``broken`` contains the tag;
- ``pieces``: streams the user text split at ``|`` (one chunk per piece);
- ``detailed``: reports cached prompt tokens and reasoning tokens in its usage;
- ``context-limit``: 400 ``context_length_exceeded``; ``filtered``: finish_reason ``content_filter``;
- ``drop``: streams two chunks, then drops the connection;
- ``pause-K``: streams K chunks, then pauses for a minute (a client can abandon it at a
  known point, with nothing in flight);
- ``tool-call``: says "Checking." and calls every tool of the request with
  ``{"query": <last user text>}`` (finish_reason ``tool_calls``); once the last message
  is a tool result, answers ``tool said: <the results, joined by "; ">``;
- anything else: answers at once, echoing the last user message.
It records every request and notices disconnects, so tests can see what reached it, and
keeps its own token totals (``prompt_total``, ``completion_total``: every token it
reported or streamed). Its tokenizer is the gateway's own estimator, so the gateway's
estimates for abandoned streams can be checked exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from apps.providers.tokens import estimate_prompt_tokens
from tests.fakes.base_server import FakeServer, Recorded


@dataclass
class FakeOpenAI(FakeServer):
    stream_chunks: int = 20
    api_key: str = "sk-fake-upstream"
    prompt_total: int = 0
    completion_total: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)

    name = "OpenAI"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)

    def reset(self) -> None:
        super().reset()
        self.prompt_total = 0
        self.completion_total = 0
        self.calls.clear()
        self.broken.clear()

    # --- OpenAI wire format ------------------------------------------------
    def _auth_error(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(
                401,
                "Incorrect API key provided: sk-***.",
                "invalid_request_error",
                "invalid_api_key",
            )
        return None

    @staticmethod
    def _error(
        status: int, message: str, type_: str, code: str | None, headers: dict | None = None
    ) -> web.Response:
        body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
        return web.json_response(body, status=status, headers=headers)

    async def _record(self, request: web.Request) -> dict[str, Any]:
        # Unlike the base class, header names stay as sent: gateway tests read them so.
        body = await request.json()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied:
            return denied
        body = await self._record(request)
        model = body.get("model", "")
        if model.startswith("status-"):
            status = int(model.split("-")[1])
            headers = {"Retry-After": "1"} if status == 429 else None
            return self._error(
                status,
                f"simulated {status}",
                "server_error" if status >= 500 else "invalid_request_error",
                None,
                headers,
            )
        self.calls[model] = self.calls.get(model, 0) + 1
        if model.startswith("flaky-") and self.calls[model] <= int(model.split("-")[1]):
            return self._error(
                429,
                "simulated rate limit",
                "rate_limit_error",
                "rate_limit_exceeded",
                {"Retry-After": "1"},
            )
        if model.startswith("toggle-") and model.split("-", 1)[1] in self.broken:
            return self._error(500, "simulated outage", "server_error", None)
        if model == "context-limit":
            return self._error(
                400,
                "This model's maximum context length is 10 tokens.",
                "invalid_request_error",
                "context_length_exceeded",
            )
        if model == "hang":
            await asyncio.sleep(3600)
        if model == "tool-call":
            return await self._tool_call(request, body)
        last = next(
            (m.get("content") for m in reversed(body["messages"]) if m.get("role") == "user"), ""
        )
        text = last if isinstance(last, str) else "parts"
        pause_at = int(model.split("-")[1]) if model.startswith("pause-") else None
        if model.startswith(("slow", "drop")):
            words = [f"w{i} " for i in range(self.stream_chunks)]
        elif pause_at is not None:
            words = [f"p{i} " for i in range(pause_at + 5)]
        elif model == "pieces":
            words = text.split("|")
        else:
            words = text.split(" ")
        prompt_tokens = estimate_prompt_tokens(body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        self.prompt_total += prompt_tokens
        if model == "detailed":
            # as OpenAI reports them: cached tokens are part of the prompt tokens,
            # reasoning tokens part of the completion tokens
            usage["prompt_tokens_details"] = {"cached_tokens": prompt_tokens - 2}
            usage["completion_tokens_details"] = {"reasoning_tokens": 1}
        if not body.get("stream"):
            if model.startswith("slow"):
                await asyncio.sleep(self.stream_delay * 5)
            self.completion_total += len(words)
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": " ".join(words)},
                            "finish_reason": "content_filter" if model == "filtered" else "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        include_usage = (body.get("stream_options") or {}).get("include_usage")

        def event(choices: list, usage_value: Any = None) -> bytes:
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": choices,
            }
            if include_usage:
                chunk["usage"] = usage_value
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        try:
            await response.write(
                event(
                    [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ]
                )
            )
            for i, word in enumerate(words):
                if model.startswith("slow") or model.startswith("drop"):
                    await asyncio.sleep(self.stream_delay)
                if model.startswith("drop") and i == 2:
                    request.transport.close()
                    return response
                if i == pause_at:
                    await asyncio.sleep(60)
                await response.write(
                    event([{"index": 0, "delta": {"content": word}, "finish_reason": None}])
                )
                self.completion_total += 1
            await response.write(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
            if include_usage:
                await response.write(event([], usage))
            await response.write(b"data: [DONE]\n\n")
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response

    async def _tool_call(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """The ``tool-call`` model: a tool-calling turn, or an answer built from tool results."""
        messages = body["messages"]
        prompt_tokens = estimate_prompt_tokens(messages)
        if messages[-1].get("role") == "tool":
            results = [m for m in messages if m.get("role") == "tool"]
            text = "tool said: " + "; ".join(str(m.get("content")) for m in results)
            calls: list[dict[str, Any]] = []
            finish = "stop"
        else:
            last = next((m.get("content") for m in reversed(messages) if m["role"] == "user"), "")
            query = last if isinstance(last, str) else "parts"
            text = "Checking."
            calls = [
                {
                    "id": f"call_fake_{i}",
                    "type": "function",
                    "function": {
                        "name": tool["function"]["name"],
                        "arguments": json.dumps({"query": query}),
                    },
                }
                for i, tool in enumerate(body.get("tools") or [])
            ]
            finish = "tool_calls" if calls else "stop"
        completion = len(text.split()) + 5 * len(calls)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 2},
        }
        self.prompt_total += prompt_tokens
        self.completion_total += completion
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                message["tool_calls"] = calls
            return web.json_response(
                {
                    "id": "chatcmpl-fake-tools",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "tool-call",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any] | None, finish_reason: str | None = None) -> None:
            chunk: dict[str, Any] = {
                "id": "chatcmpl-fake-tools",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "tool-call",
                "choices": []
                if delta is None
                else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            if delta is None:
                chunk["usage"] = usage
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        await send({"role": "assistant", "content": ""})
        for i, word in enumerate(text.split(" ")):
            await send({"content": word if i == 0 else " " + word})
        for i, call in enumerate(calls):
            # As OpenAI streams a call: id and name first, then the arguments in pieces.
            head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            await send({"tool_calls": [{"index": i, **head}]})
            arguments = call["function"]["arguments"]
            for piece in (arguments[:5], arguments[5:]):
                await send({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
        await send({}, finish)
        await send(None)
        await response.write(b"data: [DONE]\n\n")
        self.completed_streams += 1
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        denied = self._auth_error(request)
        if denied:
            return denied
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i, _ in enumerate(inputs)
                ],
                "model": body["model"],
                "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        denied = self._auth_error(request)
        if denied:
            return denied
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "fake"}
                ],
            }
        )
