"""A fake Gemini API (``/v1beta/models/...``) speaking the real wire format.

Routes: ``:generateContent``, ``:streamGenerateContent?alt=sse``, ``:batchEmbedContents``
and ``GET /v1beta/models`` (paged two at a time). Like the real API it wants the key in
``x-goog-api-key`` (or ``?key=``): none is a 403 ``PERMISSION_DENIED``, a wrong one a
400 ``INVALID_ARGUMENT`` with reason ``API_KEY_INVALID``; unknown fields, roles other than
``user``/``model``, schema keywords outside Gemini's OpenAPI subset and an ``OBJECT``
without properties are 400s. Scripted by model name:
- ``status-NNN``: that status with Google's error body (429 with a ``RetryInfo``);
- ``tool-*`` (or ``functionCallingConfig.mode: ANY``): a ``functionCall`` carrying a
  ``thoughtSignature``, which — like Gemini 3 — must come back on the next turn;
  a last turn with a ``functionResponse`` is quoted instead;
- ``blocked-prompt``: no candidates, ``promptFeedback.blockReason: SAFETY``;
- ``safety-*``: one word, then ``finishReason: SAFETY``;
- ``thinking-*``: a thought part and ``thoughtsTokenCount``;
- ``cached-*``: ``cachedContentTokenCount``;
- ``slow-*``: streams ten words with ``stream_delay`` between them;
- anything else echoes the last user text (counting images); JSON mode answers with
  an object matching ``responseSchema``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.fakes.base_server import SLOW_WORDS, FakeServer, scripted_status, sse_response

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
TOP_LEVEL = {
    "contents",
    "systemInstruction",
    "generationConfig",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
}
GENERATION_CONFIG = {
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
}
SCHEMA_KEYS = {
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
}
DATA_FIELDS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
SIGNATURE = "c2lnbmF0dXJlLWZha2U="
MODELS = ["gemini-2.5-flash", "gemini-2.5-pro", "text-embedding-004"]


def google_error(status: int, message: str, details: list | None = None) -> web.Response:
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": STATUS_NAMES.get(status, "UNKNOWN"),
        }
    }
    if details:
        body["error"]["details"] = details
    return web.json_response(body, status=status)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def normalised(value: Any) -> Any:
    """The API accepts snake_case and camelCase field names alike; check in camelCase."""
    if isinstance(value, dict):
        return {camel(k): normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def schema_problem(schema: Any, where: str) -> str | None:
    if not isinstance(schema, dict):
        return None
    for key in schema:
        if key not in SCHEMA_KEYS:
            return f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': Cannot find field."
    if str(schema.get("type", "")).upper() == "OBJECT" and not schema.get("properties"):
        return f"{where}.properties: should be non-empty for OBJECT type"
    for name, spec in (schema.get("properties") or {}).items():
        problem = schema_problem(spec, f"{where}.properties[{name}]")
        if problem:
            return problem
    return schema_problem(schema.get("items"), f"{where}.items")


def sample(schema: dict[str, Any] | None) -> Any:
    if not schema or not schema.get("properties"):
        return {"ok": True}
    values = {"STRING": "Paris", "NUMBER": 1.5, "INTEGER": 1, "BOOLEAN": True}
    return {
        name: values.get(str(spec.get("type", "")).upper(), "Paris")
        for name, spec in schema["properties"].items()
    }


class FakeGemini(FakeServer):
    name = "gemini"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1beta/models/{call}", self.dispatch)
        app.router.add_get("/v1beta/models", self.models)

    def _denied(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            return google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
            )
        if key != self.api_key:
            return google_error(
                400,
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )
        return None

    async def models(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied:
            return denied
        await self.record(request)
        start = int(request.query.get("pageToken") or 0)
        page = MODELS[start : start + 2]
        body: dict[str, Any] = {
            "models": [
                {
                    "name": f"models/{name}",
                    "displayName": name,
                    "supportedGenerationMethods": ["generateContent", "countTokens"],
                }
                for name in page
            ]
        }
        if start + 2 < len(MODELS):
            body["nextPageToken"] = str(start + 2)
        return web.json_response(body)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        denied = self._denied(request)
        if denied:
            return denied
        model, _, method = request.match_info["call"].partition(":")
        body = await self.record(request)
        status = scripted_status(model)
        if status:
            details = None
            if status == 429:
                details = [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
                ]
            return google_error(status, f"simulated {STATUS_NAMES.get(status)}", details)
        if method == "batchEmbedContents":
            return self._embed(model, normalised(body))
        if method == "generateContent":
            return await self._generate(request, model, normalised(body), stream=False)
        if method == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                return google_error(400, "this fake streams with alt=sse only")
            return await self._generate(request, model, normalised(body), stream=True)
        return google_error(404, f"Method {method} not found for models/{model}")

    def _embed(self, model: str, body: dict[str, Any]) -> web.Response:
        embeddings = []
        for i, req in enumerate(body.get("requests") or []):
            if req.get("model") != f"models/{model}":
                return google_error(
                    400, f"requests[{i}].model: model in request must match the URL"
                )
            size = int(req.get("outputDimensionality") or 3)
            text = req["content"]["parts"][0]["text"]
            embeddings.append({"values": [round(len(text) / 10, 3)] * size})
        return web.json_response({"embeddings": embeddings})

    @staticmethod
    def _invalid(body: dict[str, Any]) -> str | None:
        for key in body:
            if key not in TOP_LEVEL:
                return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
        for key in body.get("generationConfig") or {}:
            if key not in GENERATION_CONFIG:
                return (
                    f'Invalid JSON payload received. Unknown name "{key}" at '
                    "'generation_config': Cannot find field."
                )
        contents = body.get("contents") or []
        if not contents:
            return "* GenerateContentRequest.contents: contents is not specified"
        for i, content in enumerate(contents):
            if content.get("role") not in ("user", "model"):
                return "Please use a valid role: user, model."
            if not content.get("parts"):
                return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            for part in content["parts"]:
                fields = DATA_FIELDS & set(part)
                if len(fields) != 1:
                    return f"* GenerateContentRequest.contents[{i}].parts: exactly one data field"
                response = part.get("functionResponse")
                if response is not None and not isinstance(response.get("response"), dict):
                    return f"contents[{i}].parts.function_response.response must be an object"
        for t, tool in enumerate(body.get("tools") or []):
            for d, decl in enumerate(tool.get("functionDeclarations") or []):
                problem = schema_problem(
                    decl.get("parameters"), f"tools[{t}].function_declarations[{d}].parameters"
                )
                if problem:
                    return problem
        return schema_problem(
            (body.get("generationConfig") or {}).get("responseSchema"),
            "generation_config.response_schema",
        )

    def _plan(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        contents = body["contents"]
        last = contents[-1]
        config = body.get("generationConfig") or {}
        responses = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
        text = " ".join(p["text"] for p in last["parts"] if "text" in p)
        images = sum(1 for p in last["parts"] if "inlineData" in p or "fileData" in p)
        declarations = [
            d for t in body.get("tools") or [] for d in t.get("functionDeclarations", [])
        ]
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        call = None
        if declarations and not responses and calling.get("mode") != "NONE":
            allowed = calling.get("allowedFunctionNames") or []
            if calling.get("mode") == "ANY" or model.startswith("tool"):
                declaration = next(
                    (d for d in declarations if not allowed or d["name"] in allowed), None
                )
                if declaration:
                    call = {
                        "name": declaration["name"],
                        "args": sample(declaration.get("parameters")),
                    }
        if responses:
            reply = f"The tool said: {json.dumps(responses[0]['response'], sort_keys=True)}"
        elif config.get("responseMimeType") == "application/json":
            reply = json.dumps(sample(config.get("responseSchema")))
        elif model.startswith("slow"):
            reply = "".join(SLOW_WORDS).strip()
        elif images:
            reply = f"I see {images} image(s)"
        else:
            reply = text
        words = [] if call else reply.split(" ")
        finish = "STOP"
        for j, word in enumerate(words):
            if word in (config.get("stopSequences") or []):
                words = words[:j]
                break
        limit = config.get("maxOutputTokens")
        if limit and len(words) > limit:
            words, finish = words[:limit], "MAX_TOKENS"
        if model.startswith("safety"):
            words, finish = words[:1], "SAFETY"
        usage = {
            "promptTokenCount": 12,
            "candidatesTokenCount": len(words) + (3 if call else 0),
        }
        if model.startswith("cached"):
            usage["cachedContentTokenCount"] = 4
        if model.startswith("thinking"):
            usage["thoughtsTokenCount"] = 7
        usage["totalTokenCount"] = sum(usage.values()) - usage.get("cachedContentTokenCount", 0)
        return {"words": words, "call": call, "finish": finish, "usage": usage}

    async def _generate(
        self, request: web.Request, model: str, body: dict[str, Any], *, stream: bool
    ) -> web.StreamResponse:
        problem = self._invalid(body)
        if problem:
            return google_error(400, problem)
        if model.startswith("tool"):
            for content in body["contents"]:
                for part in content["parts"]:
                    if "functionCall" in part and part.get("thoughtSignature") != SIGNATURE:
                        return google_error(
                            400,
                            "Function call is missing a thought_signature in functionCall parts. "
                            "This is required for tools to work correctly.",
                        )
        base = {"modelVersion": f"{model}-001", "responseId": f"resp-{len(self.requests)}"}
        if model == "blocked-prompt":
            blocked = {
                "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5},
                **base,
            }
            if not stream:
                return web.json_response(blocked)
            response = await sse_response(request)
            await response.write(b"data: " + json.dumps(blocked).encode() + b"\r\n\r\n")
            return response
        plan = self._plan(model, body)
        count = int((body.get("generationConfig") or {}).get("candidateCount") or 1)

        def parts_for(words: list[str], with_call: bool) -> list[dict[str, Any]]:
            parts: list[dict[str, Any]] = []
            if words:
                parts.append({"text": " ".join(words)})
            if with_call and plan["call"]:
                parts.append({"functionCall": plan["call"], "thoughtSignature": SIGNATURE})
            return parts

        if not stream:
            parts = parts_for(plan["words"], True)
            if model.startswith("thinking"):
                parts.insert(0, {"text": "Let me think.", "thought": True})
            return web.json_response(
                {
                    "candidates": [
                        {
                            "content": {"parts": parts, "role": "model"},
                            "finishReason": plan["finish"],
                            "index": i,
                        }
                        for i in range(count)
                    ],
                    "usageMetadata": plan["usage"],
                    **base,
                }
            )
        response = await sse_response(request)

        async def send(payload: dict[str, Any]) -> None:
            await response.write(b"data: " + json.dumps(payload).encode() + b"\r\n\r\n")

        try:
            words = plan["words"]
            pieces = [[w if i == 0 else " " + w] for i, w in enumerate(words)] or [[]]
            if model.startswith("thinking"):
                await send(
                    {
                        "candidates": [
                            {
                                "content": {
                                    "parts": [{"text": "Let me think.", "thought": True}],
                                    "role": "model",
                                },
                                "index": 0,
                            }
                        ],
                        **base,
                    }
                )
            for n, piece in enumerate(pieces):
                if model.startswith("slow"):
                    await asyncio.sleep(self.stream_delay)
                final = n == len(pieces) - 1
                parts = [{"text": piece[0]}] if piece else []
                if final and plan["call"]:
                    parts.append({"functionCall": plan["call"], "thoughtSignature": SIGNATURE})
                candidate: dict[str, Any] = {
                    "content": {"parts": parts, "role": "model"},
                    "index": 0,
                }
                if final:
                    candidate["finishReason"] = plan["finish"]
                usage = plan["usage"] if final else {"promptTokenCount": 12}
                await send({"candidates": [candidate], "usageMetadata": usage, **base})
            self.completed_streams += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
