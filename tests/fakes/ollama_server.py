"""A fake Ollama server (``/api/chat``, ``/api/embed``, ``/api/tags``) speaking the native API.

As in Ollama, ``stream`` defaults to true and streams are NDJSON (one object a line,
the last with ``"done": true``, ``done_reason`` and the eval counts); errors are
``{"error": "..."}``; images on a message must be base64; tool call ``arguments``
must be an object. No auth unless ``require_key`` is set. Scripted by model name:
- ``status-NNN``: that status with an ``{"error"}`` body;
- ``missing-model``: 404 ``model "…" not found, try pulling it first``;
- ``load-error``: 200, then an error line before any output;
- ``tool-*``: a tool call of the first tool unless the last message is a tool result,
  which it then quotes;
- ``slow-*``: streams ten words with ``stream_delay`` between them;
- anything else echoes the last user message (counting images).
``options.num_predict`` and ``options.stop`` cut the answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from aiohttp import web

from tests.fakes.base_server import SLOW_WORDS, FakeServer, scripted_status

CREATED_AT = "2025-01-01T00:00:00.000000Z"


def ollama_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class FakeOllama(FakeServer):
    name = "ollama"
    require_key: bool = False

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/chat", self.chat)
        app.router.add_post("/api/embed", self.embed)
        app.router.add_get("/api/tags", self.tags)

    def _denied(self, request: web.Request) -> web.Response | None:
        if self.require_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return ollama_error(401, "unauthorized")
        return None

    async def tags(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        await self.record(request)
        return web.json_response(
            {
                "models": [
                    {
                        "name": name,
                        "model": name,
                        "modified_at": CREATED_AT,
                        "size": 2019393189,
                        "digest": "a80c4f17acd5",
                        "details": {"format": "gguf", "family": "llama"},
                    }
                    for name in ("llama3.2:latest", "nomic-embed-text:latest")
                ]
            }
        )

    async def embed(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        body = await self.record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        size = int(body.get("dimensions") or 3)
        return web.json_response(
            {
                "model": body["model"],
                "embeddings": [[0.125] * size for _ in inputs],
                "total_duration": 14143917,
                "load_duration": 1019500,
                "prompt_eval_count": 4 * len(inputs),
            }
        )

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        if not body.get("model"):
            return "model is required"
        for message in body.get("messages") or []:
            if message.get("role") not in ("system", "user", "assistant", "tool"):
                return f"invalid role: {message.get('role')}"
            for image in message.get("images") or []:
                try:
                    base64.b64decode(image, validate=True)
                except (binascii.Error, ValueError):
                    return "illegal base64 data at input byte 0"
            for call in message.get("tool_calls") or []:
                if not isinstance(call.get("function", {}).get("arguments"), dict):
                    return (
                        "json: cannot unmarshal string into Go struct field "
                        "ToolCallFunction.messages.tool_calls.function.arguments of type "
                        "api.ToolCallFunctionArguments"
                    )
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied:
            return denied
        body = await self.record(request)
        problem = self._invalid(body)
        if problem:
            return ollama_error(400, problem)
        model = body["model"]
        status = scripted_status(model)
        if status:
            return ollama_error(status, f"simulated {status}")
        if model == "missing-model":
            return ollama_error(404, f'model "{model}" not found, try pulling it first')
        messages = body["messages"]
        last = messages[-1]
        tools = body.get("tools") or []
        call = None
        if tools and model.startswith("tool") and last["role"] != "tool":
            call = {
                "function": {"name": tools[0]["function"]["name"], "arguments": {"city": "Paris"}}
            }
        if last["role"] == "tool":
            reply = f"The tool said: {last['content']}"
        elif model.startswith("slow"):
            reply = "".join(SLOW_WORDS).strip()
        elif last.get("images"):
            reply = f"I see {len(last['images'])} image(s)"
        else:
            reply = last.get("content", "")
        options = body.get("options") or {}
        words = [] if call else reply.split(" ")
        done_reason = "stop"
        for j, word in enumerate(words):
            if word in (options.get("stop") or []):
                words = words[:j]
                break
        if options.get("num_predict") and len(words) > options["num_predict"]:
            words, done_reason = words[: options["num_predict"]], "length"
        final = {
            "model": model,
            "created_at": CREATED_AT,
            "done": True,
            "done_reason": done_reason,
            "total_duration": 4883583458,
            "load_duration": 1334875,
            "prompt_eval_count": 11,
            "prompt_eval_duration": 342546000,
            "eval_count": len(words) + (6 if call else 0),
            "eval_duration": 4535599000,
        }
        if not body.get("stream", True):
            message: dict[str, Any] = {"role": "assistant", "content": " ".join(words)}
            if call:
                message["tool_calls"] = [call]
            return web.json_response({**final, "message": message})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        async def send(payload: dict[str, Any]) -> None:
            await response.write(json.dumps(payload).encode() + b"\n")

        try:
            if model == "load-error":
                await send({"error": "llama runner process has terminated: exit status 2"})
                return response
            for i, word in enumerate(words):
                if model.startswith("slow"):
                    await asyncio.sleep(self.stream_delay)
                await send(
                    {
                        "model": model,
                        "created_at": CREATED_AT,
                        "message": {"role": "assistant", "content": word if i == 0 else " " + word},
                        "done": False,
                    }
                )
            if call:
                await send(
                    {
                        "model": model,
                        "created_at": CREATED_AT,
                        "message": {"role": "assistant", "content": "", "tool_calls": [call]},
                        "done": False,
                    }
                )
            await send({**final, "message": {"role": "assistant", "content": ""}})
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
