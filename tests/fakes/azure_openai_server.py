"""A fake Azure OpenAI resource: per-deployment URLs, ``api-version``, ``api-key``, content filters.

Routes, as the data plane has them: ``POST /openai/deployments/{deployment}/chat/completions``,
``POST /openai/deployments/{deployment}/embeddings`` and ``GET /openai/models``, each
requiring ``?api-version=`` (404 ``Resource not found`` without a supported one) and an
``api-key`` header (or ``Authorization: Bearer`` with ``entra_token``). Scripted by
deployment name:
- ``status-NNN``: that status with Azure's error body (429 with ``retry-after`` and
  ``retry-after-ms``);
- ``missing-deployment``: 404 ``DeploymentNotFound``;
- ``filtered-prompt`` (or a prompt containing ``FORBIDDEN``): 400 ``content_filter``
  with ``innererror.content_filter_result``, as Azure's prompt filter answers;
- ``filtered-output``: a partial answer with ``finish_reason: "content_filter"``;
- ``slow-*``: streams ten words with ``stream_delay`` between them;
- ``tool-*``: calls the first tool unless the conversation ends with a tool result;
- anything else echoes the last user message.
Streams start with Azure's prompt-annotation chunk (empty ``choices``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.base_server import SLOW_WORDS, FakeServer, scripted_status, sse_response

VERSIONS = {"2024-06-01", "2024-10-21", "2025-01-01-preview"}
UNDERLYING_MODEL = "gpt-4o-2024-08-06"
SAFE = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}
FLAGGED = {**SAFE, "violence": {"filtered": True, "severity": "high"}}


def azure_error(http_status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"retry-after": "2", "retry-after-ms": "2000"} if http_status == 429 else None
    return web.json_response(
        {"error": {"code": code, "message": message, **extra}},
        status=http_status,
        headers=headers,
    )


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if p.get("type") == "text")


class FakeAzureOpenAI(FakeServer):
    name = "azure_openai"
    entra_token: str = "entra-token"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self.chat)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", self.embeddings)
        app.router.add_get("/openai/models", self.models)

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.query.get("api-version") not in VERSIONS:
            return azure_error(404, "404", "Resource not found")
        key_ok = request.headers.get("api-key") == self.api_key
        token_ok = request.headers.get("Authorization") == f"Bearer {self.entra_token}"
        if not (key_ok or token_ok):
            return azure_error(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.",
            )
        return None

    @staticmethod
    def _scripted_error(deployment: str) -> web.Response | None:
        if deployment == "missing-deployment":
            return azure_error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
            )
        status = scripted_status(deployment)
        if status is None:
            return None
        if status == 400:
            return web.json_response(
                {
                    "error": {
                        "message": "simulated 400",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=400,
            )
        if status == 429:
            return azure_error(
                429,
                "429",
                "simulated 429: Requests to the ChatCompletions_Create Operation have exceeded "
                "token rate limit of your current pricing tier. Please retry after 2 seconds.",
            )
        return azure_error(status, str(status), f"simulated {status}")

    async def models(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        await self.record(request)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "status": "succeeded", "created_at": 0}
                    for name in (UNDERLYING_MODEL, "text-embedding-3-small")
                ],
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        body = await self.record(request)
        error = self._scripted_error(request.match_info["deployment"])
        if error:
            return error
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dims = body.get("dimensions") or 3
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.5] * dims}
                    for i, _ in enumerate(inputs)
                ],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 2 * len(inputs), "total_tokens": 2 * len(inputs)},
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied:
            return denied
        body = await self.record(request)
        deployment = request.match_info["deployment"]
        error = self._scripted_error(deployment)
        if error:
            return error
        messages = body["messages"]
        last_user = next((m for m in reversed(messages) if m["role"] == "user"), {})
        if deployment == "filtered-prompt" or "FORBIDDEN" in text_of(last_user.get("content")):
            return azure_error(
                400,
                "content_filter",
                "The response was filtered due to the prompt triggering Azure OpenAI's content "
                "management policy. Please modify your prompt and retry.",
                param="prompt",
                status=400,
                innererror={
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": FLAGGED,
                },
            )
        tool_call = None
        if deployment.startswith("tool") and body.get("tools") and messages[-1]["role"] != "tool":
            tool_call = {
                "id": f"call_fake{len(self.requests)}",
                "type": "function",
                "function": {
                    "name": body["tools"][0]["function"]["name"],
                    "arguments": '{"city": "Paris"}',
                },
            }
        if messages[-1]["role"] == "tool":
            words = f"The tool said: {text_of(messages[-1]['content'])}".split(" ")
        elif deployment.startswith("slow"):
            words = [w.strip() for w in SLOW_WORDS]
        else:
            words = text_of(last_user.get("content")).split(" ")
        finish = "tool_calls" if tool_call else "stop"
        filters = SAFE
        if deployment == "filtered-output":
            words, finish, filters = words[:1], "content_filter", FLAGGED
        if tool_call:
            words = []
        usage = {
            "prompt_tokens": 9,
            "completion_tokens": len(words),
            "total_tokens": 9 + len(words),
        }
        prompt_filters = [{"prompt_index": 0, "content_filter_results": SAFE}]
        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": " ".join(words) if words else None,
            }
            if tool_call:
                message["tool_calls"] = [tool_call]
            return web.json_response(
                {
                    "id": "chatcmpl-azure",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": UNDERLYING_MODEL,
                    "system_fingerprint": "fp_azure",
                    "prompt_filter_results": prompt_filters,
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": finish,
                            "logprobs": None,
                            "content_filter_results": filters,
                        }
                    ],
                    "usage": usage,
                }
            )
        response = await sse_response(request)
        include_usage = (body.get("stream_options") or {}).get("include_usage")

        async def send(payload: dict[str, Any]) -> None:
            await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any):
            return {
                "id": "chatcmpl-azure",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": UNDERLYING_MODEL,
                "system_fingerprint": "fp_azure",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, **extra}],
                **({"usage": None} if include_usage else {}),
            }

        try:
            await send(
                {
                    "choices": [],
                    "created": 0,
                    "id": "",
                    "model": "",
                    "object": "",
                    "prompt_filter_results": prompt_filters,
                }
            )
            await send(chunk({"role": "assistant", "content": ""}))
            for i, word in enumerate(words):
                if deployment.startswith("slow"):
                    await asyncio.sleep(self.stream_delay)
                await send(
                    chunk({"content": word if i == 0 else " " + word}, content_filter_results=SAFE)
                )
            if tool_call:
                await send(chunk({"tool_calls": [{"index": 0, **tool_call}]}))
            await send(chunk({}, finish, content_filter_results=filters))
            if include_usage:
                await send({**chunk({}), "choices": [], "usage": usage})
            await response.write(b"data: [DONE]\n\n")
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
