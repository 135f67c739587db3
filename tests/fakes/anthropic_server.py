"""A fake Anthropic Messages API (``/v1/messages``, ``/v1/models``) speaking the real wire format.

Like the real API it requires ``x-api-key`` and ``anthropic-version``, wants
``max_tokens``, rejects a ``system`` role inside ``messages``, wants user/assistant
turns to alternate and every ``tool_use`` answered by a ``tool_result`` in the next
user turn. Behaviour is scripted by model name:
- ``status-NNN``: that status with Anthropic's error body (429 with ``retry-after``);
- ``slow-*``: streams ten words with ``stream_delay`` between them;
- ``midstream-error``: streams one word, then an ``overloaded_error`` event;
- ``drop-*``: streams two words, then drops the connection;
- ``overloaded-at-start``: ``message_start``, then an ``overloaded_error`` event;
- ``refuse-*``: ``stop_reason: refusal``;
- ``cached-*``: usage with cache reads and writes;
- ``tool-*`` (or any request whose ``tool_choice`` forces a tool): answers with a
  ``tool_use`` of the first (or the forced) tool, unless the last user turn carries a
  ``tool_result``, which it then quotes;
- anything else echoes the last user text (and counts its images).
``max_tokens`` and ``stop_sequences`` cut the answer as the real API would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.fakes.base_server import SLOW_WORDS, FakeServer, scripted_status, sse_response

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
VERSIONS = {"2023-01-01", "2023-06-01"}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": "req_fake",
    }
    return web.json_response(body, status=status, headers=headers)


def sample_input(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema.get("properties") or {}
    if not props:
        return {"ok": True}
    values = {"string": "Paris", "number": 1.5, "integer": 1, "boolean": True}
    return {name: values.get(spec.get("type"), "Paris") for name, spec in props.items()}


def words_of(text: str) -> list[str]:
    pieces = text.split(" ")
    return [pieces[0]] + [" " + p for p in pieces[1:]] if text else []


class FakeAnthropic(FakeServer):
    name = "anthropic"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return error(401, "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        if not version:
            return error(400, "anthropic-version: header is required")
        if version not in VERSIONS:
            return error(400, f"anthropic-version: invalid version {version}")
        return None

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        for name in ("model", "messages", "max_tokens"):
            if name not in body:
                return f"{name}: Field required"
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return "max_tokens: must be a positive integer"
        if body.get("temperature") is not None and not 0 <= body["temperature"] <= 1:
            return "temperature: range: 0..1"
        previous = None
        pending_tools: set[str] = set()
        for i, message in enumerate(body["messages"]):
            role = message.get("role")
            if role not in ("user", "assistant"):
                return (
                    f'messages.{i}.role: Unexpected role "{role}". The Messages API accepts a '
                    'top-level `system` parameter, not "system" as an input message role.'
                )
            if role == previous:
                return 'messages: roles must alternate between "user" and "assistant"'
            previous = role
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if not blocks:
                return f"messages.{i}: all messages must have non-empty content"
            if pending_tools:
                results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
                if role != "user" or not pending_tools <= results:
                    return (
                        f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                        "immediately after"
                    )
                last_result = max(j for j, b in enumerate(blocks) if b.get("type") == "tool_result")
                if any(b.get("type") != "tool_result" for b in blocks[:last_result]):
                    return f"messages.{i}: tool_result blocks must come first"
            pending_tools = {b["id"] for b in blocks if b.get("type") == "tool_use"}
            for block in blocks:
                if block.get("type") == "text" and not block.get("text"):
                    return f"messages.{i}: text content blocks must be non-empty"
                if block.get("type") == "image":
                    source = block.get("source") or {}
                    if source.get("type") not in ("base64", "url"):
                        return f"messages.{i}: image source type must be base64 or url"
        return None

    async def models(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        await self.record(request)
        data = [
            {
                "type": "model",
                "id": name,
                "display_name": name,
                "created_at": "2025-01-01T00:00:00Z",
            }
            for name in ("claude-sonnet-4-5", "claude-haiku-4-5")
        ]
        return web.json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    def _plan(self, body: dict[str, Any]) -> dict[str, Any]:
        """What to answer: text, an optional tool_use, the stop reason and the usage."""
        model = body["model"]
        last_user = next(m for m in reversed(body["messages"]) if m["role"] == "user")
        content = last_user["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        results = [b for b in blocks if b.get("type") == "tool_result"]
        text = " ".join(b["text"] for b in blocks if b.get("type") == "text")
        images = sum(1 for b in blocks if b.get("type") == "image")
        tools = body.get("tools") or []
        choice = body.get("tool_choice") or {}
        tool = None
        if not results and tools and choice.get("type") != "none":
            if choice.get("type") == "tool":
                tool = next(t for t in tools if t["name"] == choice["name"])
            elif choice.get("type") == "any" or model.startswith("tool"):
                tool = tools[0]
        if results:
            result = results[0].get("content")
            if isinstance(result, list):
                result = " ".join(b.get("text", "") for b in result)
            reply = f"The tool said: {result}"
        elif model.startswith(("slow", "drop")) or model == "midstream-error":
            reply = "".join(SLOW_WORDS).strip()
        elif model.startswith("refuse"):
            reply = "I can't help with that."
        elif images:
            reply = f"I see {images} image(s)"
        else:
            reply = text
        words = [] if tool else words_of(reply)
        stop_reason, stop_sequence = ("tool_use" if tool else "end_turn"), None
        for j, word in enumerate(words):
            if word.strip() in (body.get("stop_sequences") or []):
                words, stop_reason, stop_sequence = words[:j], "stop_sequence", word.strip()
                break
        if len(words) > body["max_tokens"]:
            words, stop_reason = words[: body["max_tokens"]], "max_tokens"
        if model.startswith("refuse"):
            stop_reason = "refusal"
        usage = {
            "input_tokens": 10,
            "output_tokens": len(words) + (5 if tool else 0),
            "cache_creation_input_tokens": 20 if model.startswith("cached") else 0,
            "cache_read_input_tokens": 100 if model.startswith("cached") else 0,
        }
        tool_use = None
        if tool:
            tool_use = {
                "type": "tool_use",
                "id": f"toolu_fake{len(self.requests)}",
                "name": tool["name"],
                "input": sample_input(tool.get("input_schema") or {}),
            }
        return {
            "words": words,
            "tool_use": tool_use,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }

    async def messages(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied:
            return denied
        body = await self.record(request)
        problem = self._invalid(body)
        if problem:
            return error(400, problem)
        model = body["model"]
        status = scripted_status(model)
        if status:
            headers = {"retry-after": "2"} if status == 429 else None
            return error(status, f"simulated {ERROR_TYPES.get(status, 'error')}", headers)
        plan = self._plan(body)
        message_id = f"msg_fake{len(self.requests)}"
        if not body.get("stream"):
            content: list[dict[str, Any]] = []
            if plan["words"]:
                content.append({"type": "text", "text": "".join(plan["words"])})
            if plan["tool_use"]:
                content.append(plan["tool_use"])
            return web.json_response(
                {
                    "id": message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": plan["stop_reason"],
                    "stop_sequence": plan["stop_sequence"],
                    "usage": plan["usage"],
                }
            )
        return await self._stream(request, body, plan, message_id)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], plan: dict[str, Any], message_id: str
    ) -> web.StreamResponse:
        model = body["model"]
        response = await sse_response(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            await response.write(
                f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
            )

        try:
            start_usage = {**plan["usage"], "output_tokens": 1}
            await send(
                "message_start",
                {
                    "message": {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    }
                },
            )
            if model == "overloaded-at-start":
                # What Anthropic does under load: 200, message_start, then an error event.
                await send(
                    "error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}
                )
                return response
            index = 0
            if plan["words"]:
                await send(
                    "content_block_start",
                    {"index": 0, "content_block": {"type": "text", "text": ""}},
                )
                await send("ping", {})
                for i, word in enumerate(plan["words"]):
                    if model.startswith(("slow", "drop")) or model == "midstream-error":
                        await asyncio.sleep(self.stream_delay)
                    if model.startswith("drop") and i == 2:
                        request.transport.close()
                        return response
                    if model == "midstream-error" and i == 1:
                        await send(
                            "error",
                            {"error": {"type": "overloaded_error", "message": "Overloaded"}},
                        )
                        return response
                    await send(
                        "content_block_delta",
                        {"index": 0, "delta": {"type": "text_delta", "text": word}},
                    )
                await send("content_block_stop", {"index": 0})
                index = 1
            if plan["tool_use"]:
                tool_use = plan["tool_use"]
                await send(
                    "content_block_start",
                    {"index": index, "content_block": {**tool_use, "input": {}}},
                )
                arguments = json.dumps(tool_use["input"])
                cut = len(arguments) // 2
                for piece in ("", arguments[:cut], arguments[cut:]):
                    await send(
                        "content_block_delta",
                        {
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    )
                await send("content_block_stop", {"index": index})
            await send(
                "message_delta",
                {
                    "delta": {
                        "stop_reason": plan["stop_reason"],
                        "stop_sequence": plan["stop_sequence"],
                    },
                    "usage": {"output_tokens": plan["usage"]["output_tokens"]},
                },
            )
            await send("message_stop", {})
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
