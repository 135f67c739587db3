"""A fake Cohere API (``/v2/chat``, ``/v2/embed``, ``/v1/models``) speaking the real wire format.

Bearer auth (``{"message": "invalid api token"}`` otherwise); unknown request fields,
roles outside system/user/assistant/tool and tool results without a matching call are
400s. The stream is SSE with ``event:`` names and the v2 event sequence
(``message-start``, ``content-start``/``-delta``/``-end``, ``tool-plan-delta``,
``tool-call-start``/``-delta``/``-end``, ``message-end`` with ``finish_reason`` and usage).
Scripted by model name:
- ``status-NNN``: that status with Cohere's ``{"id", "message"}`` body;
- ``tool-*``: a tool plan and a call of the first tool, unless the last message is a
  tool result, which it then quotes;
- ``error-finish``: ``finish_reason: ERROR``;
- ``slow-*``: streams ten words with ``stream_delay`` between them;
- anything else echoes the last user text (counting images).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.base_server import SLOW_WORDS, FakeServer, scripted_status, sse_response

CHAT_FIELDS = {
    "model",
    "messages",
    "tools",
    "strict_tools",
    "documents",
    "citation_options",
    "response_format",
    "safety_mode",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "k",
    "p",
    "logprobs",
    "tool_choice",
    "thinking",
    "stream",
}
TOOL_PLAN = "I will look up the weather."


def cohere_error(status: int, message: str) -> web.Response:
    return web.json_response({"id": str(uuid.uuid4()), "message": message}, status=status)


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")


class FakeCohere(FakeServer):
    name = "cohere"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/chat", self.chat)
        app.router.add_post("/v2/embed", self.embed)
        app.router.add_get("/v1/models", self.models)

    def _denied(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization")
        if not auth:
            return cohere_error(401, "no api key supplied")
        if auth != f"Bearer {self.api_key}":
            return cohere_error(401, "invalid api token")
        return None

    async def models(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        await self.record(request)
        return web.json_response(
            {
                "models": [
                    {"name": "command-a-03-2025", "endpoints": ["chat"], "context_length": 256000},
                    {"name": "embed-v4.0", "endpoints": ["embed"], "context_length": 128000},
                ],
                "next_page_token": None,
            }
        )

    async def embed(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        body = await self.record(request)
        status = scripted_status(body.get("model", ""))
        if status:
            return cohere_error(status, f"simulated {status}")
        if not body.get("input_type"):
            return cohere_error(400, "invalid request: input_type is required for this model")
        texts = body.get("texts") or []
        size = int(body.get("output_dimension") or 3)
        return web.json_response(
            {
                "id": str(uuid.uuid4()),
                "embeddings": {"float": [[0.25] * size for _ in texts]},
                "texts": texts,
                "meta": {
                    "api_version": {"version": "2"},
                    "billed_units": {"input_tokens": 3 * len(texts)},
                },
                "response_type": "embeddings_by_type",
            }
        )

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        for key in body:
            if key not in CHAT_FIELDS:
                return f"invalid request: unknown field `{key}`"
        if not body.get("model"):
            return "invalid request: model must be specified"
        if body.get("tool_choice") not in (None, "REQUIRED", "NONE"):
            return "invalid request: tool_choice must be one of REQUIRED, NONE"
        call_ids: set[str] = set()
        for i, message in enumerate(body.get("messages") or []):
            role = message.get("role")
            if role not in ("system", "user", "assistant", "tool"):
                return (
                    f"invalid request: messages[{i}].role must be system, user, assistant or tool"
                )
            for call in message.get("tool_calls") or []:
                call_ids.add(call["id"])
                if not isinstance(call["function"].get("arguments"), str):
                    return f"invalid request: messages[{i}].tool_calls arguments must be a string"
            if role == "tool" and message.get("tool_call_id") not in call_ids:
                return f"invalid request: messages[{i}].tool_call_id has no matching tool call"
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied:
            return denied
        body = await self.record(request)
        problem = self._invalid(body)
        if problem:
            return cohere_error(400, problem)
        model = body["model"]
        status = scripted_status(model)
        if status:
            message = f"simulated {status}"
            if status == 429:
                message += ": You are using a Trial key, which is limited to 10 API calls / minute."
            return cohere_error(status, message)
        messages = body["messages"]
        last = messages[-1]
        tools = body.get("tools") or []
        call = None
        if (
            tools
            and last["role"] != "tool"
            and body.get("tool_choice") != "NONE"
            and (model.startswith("tool") or body.get("tool_choice") == "REQUIRED")
        ):
            call = {
                "id": f"get_weather_{len(self.requests)}",
                "type": "function",
                "function": {
                    "name": tools[0]["function"]["name"],
                    "arguments": json.dumps({"city": "Paris"}),
                },
            }
        if last["role"] == "tool":
            document = last["content"][0]["document"]["data"]
            reply = f"The tool said: {document}"
        elif model.startswith("slow"):
            reply = "".join(SLOW_WORDS).strip()
        else:
            last_user = next(m for m in reversed(messages) if m["role"] == "user")
            content = last_user["content"]
            images = (
                sum(1 for p in content if p.get("type") == "image_url")
                if isinstance(content, list)
                else 0
            )
            reply = f"I see {images} image(s)" if images else text_of(content)
        words = [] if call else reply.split(" ")
        finish = "TOOL_CALL" if call else "COMPLETE"
        for j, word in enumerate(words):
            if word in (body.get("stop_sequences") or []):
                words, finish = words[:j], "STOP_SEQUENCE"
                break
        if body.get("max_tokens") and len(words) > body["max_tokens"]:
            words, finish = words[: body["max_tokens"]], "MAX_TOKENS"
        if model == "error-finish":
            finish = "ERROR"
        usage = {
            "billed_units": {"input_tokens": 5, "output_tokens": len(words) + (4 if call else 0)},
            "tokens": {"input_tokens": 50, "output_tokens": len(words) + (4 if call else 0)},
        }
        response_id = str(uuid.uuid4())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant"}
            if call:
                message["tool_plan"] = TOOL_PLAN
                message["tool_calls"] = [call]
            else:
                message["content"] = [{"type": "text", "text": " ".join(words)}]
            return web.json_response(
                {"id": response_id, "finish_reason": finish, "message": message, "usage": usage}
            )
        response = await sse_response(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            payload = json.dumps({"type": kind, **data})
            await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())

        try:
            await send(
                "message-start",
                {
                    "id": response_id,
                    "delta": {
                        "message": {
                            "role": "assistant",
                            "content": [],
                            "tool_plan": "",
                            "tool_calls": [],
                            "citations": [],
                        }
                    },
                },
            )
            if call:
                for piece in TOOL_PLAN.split(" "):
                    await send(
                        "tool-plan-delta", {"delta": {"message": {"tool_plan": piece + " "}}}
                    )
                start = {**call, "function": {**call["function"], "arguments": ""}}
                await send(
                    "tool-call-start", {"index": 0, "delta": {"message": {"tool_calls": start}}}
                )
                arguments = call["function"]["arguments"]
                for piece in (arguments[:5], arguments[5:]):
                    await send(
                        "tool-call-delta",
                        {
                            "index": 0,
                            "delta": {
                                "message": {"tool_calls": {"function": {"arguments": piece}}}
                            },
                        },
                    )
                await send("tool-call-end", {"index": 0})
            else:
                await send(
                    "content-start",
                    {"index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
                )
                for i, word in enumerate(words):
                    if model.startswith("slow"):
                        await asyncio.sleep(self.stream_delay)
                    text = word if i == 0 else " " + word
                    await send(
                        "content-delta",
                        {"index": 0, "delta": {"message": {"content": {"text": text}}}},
                    )
                await send("content-end", {"index": 0})
            await send("message-end", {"delta": {"finish_reason": finish, "usage": usage}})
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
