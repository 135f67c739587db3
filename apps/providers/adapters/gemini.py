"""Google's Gemini API (generativelanguage.googleapis.com), translated to and from OpenAI chat.

``POST {base_url}/v1beta/models/{model}:generateContent`` (``:streamGenerateContent?alt=sse``
when streaming), the key in ``x-goog-api-key``. Options: ``api_version`` (default
``v1beta``), ``safety_settings`` (sent as ``safetySettings``), ``embedding_task_type``
(``taskType`` of embeddings), ``headers``.

Translation notes:
- system and developer messages become ``systemInstruction``; user turns role
  ``user``, assistant turns role ``model``; tool results are ``functionResponse``
  parts of a user turn, named after the call they answer (Gemini matches by name);
- Gemini does not number function calls, so the gateway makes up tool call ids. When
  a call carries a ``thoughtSignature`` (thinking models require it back on the next
  turn), the signature rides inside the id after ``__thought__`` and is restored when
  the client sends the call back;
- JSON schemas (tool parameters, ``response_format``) are reduced to the OpenAPI
  subset Gemini accepts: local ``$ref`` inlined, ``["x", "null"]`` → ``nullable``,
  ``const`` → ``enum``, unknown keywords dropped;
- http(s) image URLs are sent as ``fileData`` (the gateway does not fetch URLs);
- usage: ``promptTokenCount`` already includes cached tokens; ``completion_tokens`` is
  candidates + thoughts, with the thoughts also as ``reasoning_tokens``; embeddings
  report no usage, so theirs is estimated.
"""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx

from apps.core.errors import ProviderError
from apps.providers.adapters import _common as common
from apps.providers.adapters.base import ProviderAdapter, Target, register
from apps.providers.http import iter_sse_data
from apps.providers.tokens import estimate_tokens

API_VERSION = "v1beta"
SIGNATURE_SEP = "__thought__"
FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)
SCHEMA_KEYS = frozenset(
    {
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
)
# The only string/number formats Gemini's Schema accepts; others (email, uri…) are dropped.
SCHEMA_FORMATS = frozenset({"enum", "date-time", "float", "double", "int32", "int64"})
AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}


def error_from_body(
    provider: str, status: int, content: bytes, headers: httpx.Headers
) -> ProviderError:
    """``{"error": {"code", "message", "status", "details"}}`` → :class:`ProviderError`."""
    payload = common.loads_or_none(content)
    err = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        err = payload[0].get("error")  # streamed errors arrive as a JSON array
    retry_after = common.retry_after_seconds(headers)
    if not isinstance(err, dict):
        message = content[:300].decode(errors="replace").strip()
        return common.upstream_error(provider, status, message, retry_after=retry_after)
    message = str(err.get("message") or err.get("status") or "")
    for detail in err.get("details") or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("reason") in ("API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED"):
            status = 401  # Gemini says 400 for a bad key; it is the gateway's credential
        delay = detail.get("retryDelay")
        if retry_after is None and isinstance(delay, str) and delay.endswith("s"):
            try:
                retry_after = float(delay[:-1])
            except ValueError:
                pass
    return common.upstream_error(provider, status, message, retry_after=retry_after)


# --- schemas ------------------------------------------------------------------------


def gemini_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON Schema reduced to the OpenAPI subset Gemini accepts."""
    if not isinstance(schema, dict) or depth > 32:
        return schema
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target = defs.get(ref.rsplit("/", 1)[-1])
        merged = {**(target or {}), **{k: v for k, v in schema.items() if k != "$ref"}}
        return gemini_schema(merged, defs, depth + 1)
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        kind = kinds[0] if len(kinds) == 1 else None
        if len(kinds) > 1:
            out["anyOf"] = [{"type": k} for k in kinds]
    if kind:
        out["type"] = kind
    if "const" in schema:
        out["enum"] = [schema["const"]]
    for key, value in schema.items():
        if key not in SCHEMA_KEYS or key in out or key == "type":
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(spec, defs, depth + 1) for name, spec in value.items()}
        elif key == "items":
            out[key] = gemini_schema(value, defs, depth + 1)
        elif key == "anyOf" and isinstance(value, list):
            variants = [v for v in value if not (isinstance(v, dict) and v.get("type") == "null")]
            if len(variants) < len(value):
                out["nullable"] = True
            variants = [gemini_schema(v, defs, depth + 1) for v in variants]
            if len(variants) == 1:
                out.update({k: v for k, v in variants[0].items() if k not in out})
            else:
                out[key] = variants
        elif key == "format" and value not in SCHEMA_FORMATS:
            continue
        elif key == "enum" and isinstance(value, list):
            out[key] = [str(v) for v in value if v is not None]
        else:
            out[key] = value
    return out


def function_declaration(fn: dict[str, Any]) -> dict[str, Any]:
    declaration: dict[str, Any] = {
        "name": fn.get("name"),
        "description": fn.get("description") or "",
    }
    parameters = fn.get("parameters")
    # Gemini rejects an OBJECT without properties; a function without arguments has none.
    if isinstance(parameters, dict) and parameters.get("properties"):
        declaration["parameters"] = gemini_schema(parameters)
    return declaration


# --- request ------------------------------------------------------------------------


def _media_part(media_type: str, data: str) -> dict[str, Any]:
    return {"inlineData": {"mimeType": media_type, "data": data}}


def _user_parts(content: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for part in common.content_parts(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": str(part["text"])})
        elif kind == "image_url":
            url = common.image_url_of(part)
            data_url = common.parse_data_url(url)
            if data_url:
                parts.append(_media_part(*data_url))
            else:
                guessed = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
                parts.append({"fileData": {"mimeType": guessed, "fileUri": url}})
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            media = AUDIO_TYPES.get(str(audio.get("format")), f"audio/{audio.get('format')}")
            parts.append(_media_part(media, str(audio.get("data") or "")))
        elif kind == "file":
            file = part.get("file") or {}
            data_url = common.parse_data_url(str(file.get("file_data") or ""))
            if not data_url:
                raise common.unsupported("File parts must carry base64 'file_data'.", "messages")
            parts.append(_media_part(*data_url))
        else:
            raise common.unsupported(f"Content parts of type {kind!r} are not supported.")
    return parts


def split_call_id(call_id: str) -> tuple[str, str | None]:
    head, sep, signature = call_id.partition(SIGNATURE_SEP)
    return head, (signature if sep else None)


def _model_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts = [{"text": text} for text in [common.text_of(message.get("content"), "")] if text]
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        part: dict[str, Any] = {
            "functionCall": {
                "name": function.get("name"),
                "args": common.parse_arguments(function.get("arguments")),
            }
        }
        _, signature = split_call_id(str(call.get("id") or ""))
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    call_id = str(message.get("tool_call_id") or "")
    name = names.get(call_id)
    if not name:
        raise common.unsupported(
            f"The tool message answers tool call {call_id!r}, which no assistant message made; "
            "Gemini needs the function's name.",
            "messages",
        )
    text = common.text_of(message.get("content"), "")
    value = common.loads_or_none(text) if text else None
    response = value if isinstance(value, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = common.tool_names_by_id(messages)
    contents: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role == "user":
            gemini_role, parts = "user", _user_parts(message.get("content"))
        elif role == "assistant":
            gemini_role, parts = "model", _model_parts(message)
        elif role == "tool":
            gemini_role, parts = "user", [_function_response(message, names)]
        else:
            raise common.unsupported(
                "Legacy 'function' messages are not supported; use tools.", "messages"
            )
        if not parts:
            continue
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return contents


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise common.unsupported("tool_choice needs function.name.", "tool_choice")
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None


def to_gemini(target: Target, body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or []
    payload: dict[str, Any] = {"contents": _contents(messages)}
    system = [
        {"text": common.text_of(m.get("content"))}
        for m in messages
        if m.get("role") in ("system", "developer") and common.text_of(m.get("content"))
    ]
    if system:
        payload["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("seed", "seed"),
    ):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    if common.max_tokens_of(body):
        config["maxOutputTokens"] = common.max_tokens_of(body)
    if common.stop_list(body):
        config["stopSequences"] = common.stop_list(body)
    if int(body.get("n") or 1) > 1:
        config["candidateCount"] = int(body["n"])
    json_format = common.json_schema_of(body)
    if json_format is not None:
        config["responseMimeType"] = "application/json"
        if json_format[1]:
            config["responseSchema"] = gemini_schema(json_format[1])
    if config:
        payload["generationConfig"] = config
    functions = common.function_tools(body)
    if functions:
        payload["tools"] = [{"functionDeclarations": [function_declaration(f) for f in functions]}]
        tool_config = _tool_config(body.get("tool_choice"))
        if tool_config:
            payload["toolConfig"] = tool_config
    if target.options.get("safety_settings"):
        payload["safetySettings"] = target.options["safety_settings"]
    return payload


# --- response -----------------------------------------------------------------------


def usage_from(meta: dict[str, Any]) -> dict[str, Any]:
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    return common.usage_object(
        prompt,
        completion,
        cached=int(meta.get("cachedContentTokenCount") or 0),
        reasoning=thoughts,
        total=meta.get("totalTokenCount") or prompt + completion,
    )


def finish_reason(reason: str | None, has_calls: bool) -> str | None:
    if reason is None:
        return None
    if reason in FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if has_calls else "stop"


def call_from(part: dict[str, Any]) -> dict[str, Any]:
    call = part["functionCall"]
    call_id = str(call.get("id") or "call_" + uuid.uuid4().hex[:24])
    if part.get("thoughtSignature"):
        call_id += SIGNATURE_SEP + str(part["thoughtSignature"])
    return common.tool_call(
        call_id, str(call.get("name") or ""), common.dumps(call.get("args") or {})
    )


def _candidate_output(candidate: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    texts, calls = [], []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            calls.append(call_from(part))
        elif isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
    return "".join(texts), calls


def from_gemini(response: dict[str, Any], model: str) -> dict[str, Any]:
    choices = []
    for i, candidate in enumerate(response.get("candidates") or []):
        text, calls = _candidate_output(candidate)
        choices.append(
            {
                "index": candidate.get("index", i),
                "message": common.assistant_message(text, calls),
                "finish_reason": finish_reason(
                    candidate.get("finishReason") or "STOP", bool(calls)
                ),
            }
        )
    if not choices:
        # No candidates: the prompt itself was blocked (promptFeedback.blockReason).
        choices.append(
            {
                "message": {"role": "assistant", "content": None, "refusal": None},
                "finish_reason": "content_filter",
            }
        )
    return common.completion_object(
        id=response.get("responseId") or common.new_id(),
        model=response.get("modelVersion") or model,
        choices=choices,
        usage=usage_from(response.get("usageMetadata") or {}),
    )


class _StreamState:
    def __init__(self, model: str) -> None:
        self.out = common.ChunkWriter(model)
        self.started: set[int] = set()
        self.tools: dict[int, int] = {}  # candidate index → tool calls so far
        self.usage: dict[str, Any] = {}
        self.finished: set[int] = set()

    def handle(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        if response.get("responseId"):
            self.out.id = response["responseId"]
        if response.get("usageMetadata"):
            self.usage = response["usageMetadata"]
        candidates = response.get("candidates") or []
        if not candidates and (response.get("promptFeedback") or {}).get("blockReason"):
            candidates = [{"index": 0, "finishReason": "SAFETY"}]
        for i, candidate in enumerate(candidates):
            index = int(candidate.get("index", i))
            if index not in self.started:
                self.started.add(index)
                chunks.append(self.out.role(index))
            for part in (candidate.get("content") or {}).get("parts") or []:
                if "functionCall" in part:
                    call = call_from(part)
                    tool_index = self.tools.get(index, 0)
                    self.tools[index] = tool_index + 1
                    chunks.append(
                        self.out.tool_start(
                            tool_index,
                            call["id"],
                            call["function"]["name"],
                            call["function"]["arguments"],
                            index=index,
                        )
                    )
                elif part.get("text") and not part.get("thought"):
                    chunks.append(self.out.text(part["text"], index))
            reason = finish_reason(candidate.get("finishReason"), bool(self.tools.get(index)))
            if reason and index not in self.finished:
                self.finished.add(index)
                chunks.append(self.out.finish(reason, index))
        return chunks


@register
class GeminiAdapter(ProviderAdapter):
    kind = "gemini"
    label = "Google Gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    supports_embeddings = True

    def _root(self, target: Target) -> str:
        base = self.api_base(target)
        version = str(target.options.get("api_version") or API_VERSION)
        if base.endswith(("/v1beta", "/v1")):
            return base
        return f"{base}/{version}"

    @staticmethod
    def _model_path(target: Target) -> str:
        model = target.upstream_model
        return model if "/" in model else f"models/{model}"

    def _headers(self, target: Target) -> dict[str, str]:
        return common.request_headers(target, {"x-goog-api-key": target.credential})

    async def chat(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        response = await common.post_json(
            target,
            f"{self._root(target)}/{self._model_path(target)}:generateContent",
            to_gemini(target, body),
            self._headers(target),
            partial(error_from_body, target.provider_name),
        )
        return from_gemini(response, target.upstream_model)

    async def stream_chat(
        self, target: Target, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        state = _StreamState(target.upstream_model)
        async with common.open_stream(
            target,
            f"{self._root(target)}/{self._model_path(target)}:streamGenerateContent?alt=sse",
            to_gemini(target, body),
            {**self._headers(target), "accept": "text/event-stream"},
            partial(error_from_body, target.provider_name),
        ) as response:
            async for data in iter_sse_data(response):
                event = common.loads_or_none(data)
                if not isinstance(event, dict):
                    raise ProviderError(
                        f"provider {target.provider_name} sent an invalid stream event", status=502
                    )
                if "error" in event:
                    err = event["error"] if isinstance(event["error"], dict) else {}
                    raise common.upstream_error(
                        target.provider_name,
                        int(err.get("code") or 500),
                        str(err.get("message") or event["error"]),
                    )
                for chunk in state.handle(event):
                    yield chunk
        if not state.finished:
            raise common.stream_ended_early(target.provider_name)
        yield state.out.usage(usage_from(state.usage))

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not all(isinstance(text, str) for text in inputs):
            raise common.unsupported("Gemini embeds text only, not token arrays.", "input")
        model_path = self._model_path(target)
        request: dict[str, Any] = {"model": model_path}
        if body.get("dimensions"):
            request["outputDimensionality"] = body["dimensions"]
        if target.options.get("embedding_task_type"):
            request["taskType"] = target.options["embedding_task_type"]
        response = await common.post_json(
            target,
            f"{self._root(target)}/{model_path}:batchEmbedContents",
            {"requests": [{**request, "content": {"parts": [{"text": t}]}} for t in inputs]},
            self._headers(target),
            partial(error_from_body, target.provider_name),
        )
        tokens = sum(max(1, estimate_tokens(t)) for t in inputs)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": item.get("values") or []}
                for i, item in enumerate(response.get("embeddings") or [])
            ],
            "model": target.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def list_models(self, target: Target) -> list[str]:
        return await common.get_pages(
            target,
            f"{self._root(target)}/models",
            self._headers(target),
            partial(error_from_body, target.provider_name),
            {"pageSize": 1000},
            lambda page: (
                str(m["name"]).removeprefix("models/")
                for m in page.get("models") or []
                if isinstance(m, dict) and m.get("name")
            ),
            lambda page: (
                {"pageSize": 1000, "pageToken": page["nextPageToken"]}
                if page.get("nextPageToken")
                else None
            ),
        )
