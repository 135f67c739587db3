"""Ollama's native API (``/api/chat``, ``/api/embed``, ``/api/tags``), translated to and from OpenAI.

Streams are NDJSON, one JSON object a line, the last with ``"done": true`` and the
token counts. No auth by default; a credential, when set, is sent as a bearer token
(Ollama behind a proxy, or ollama.com). Options: ``ollama_options`` (merged into the
request's ``options``, e.g. ``{"num_ctx": 8192}``), ``keep_alive``, ``headers``.

Translation notes: sampling parameters go into ``options`` (``max_tokens`` →
``num_predict``); images must be base64 data URLs (Ollama takes raw base64 on the
message; the gateway does not fetch URLs); ``response_format`` becomes ``format``
(``"json"`` or the schema); Ollama does not number tool calls, so the gateway makes
up ids, and sends the function name back as ``tool_name`` on tool results.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import httpx

from apps.core.errors import ProviderError
from apps.providers.adapters import _common as common
from apps.providers.adapters.base import ProviderAdapter, Target, register

FINISH_REASONS = {"stop": "stop", "length": "length"}


def error_from_body(
    provider: str, status: int, content: bytes, headers: httpx.Headers
) -> ProviderError:
    """``{"error": "..."}`` → :class:`ProviderError`."""
    payload = common.loads_or_none(content)
    if isinstance(payload, dict) and payload.get("error"):
        message = str(payload["error"])
    else:
        message = content[:300].decode(errors="replace").strip()
    return common.upstream_error(
        provider, status, message, retry_after=common.retry_after_seconds(headers)
    )


def usage_from(response: dict[str, Any]) -> dict[str, Any]:
    return common.usage_object(
        int(response.get("prompt_eval_count") or 0), int(response.get("eval_count") or 0)
    )


def finish_reason(response: dict[str, Any], has_calls: bool) -> str:
    if has_calls:
        return "tool_calls"
    return FINISH_REASONS.get(str(response.get("done_reason") or "stop"), "stop")


# --- request ------------------------------------------------------------------------


def _user_message(content: Any) -> dict[str, Any]:
    texts: list[str] = []
    images: list[str] = []
    for part in common.content_parts(content):
        kind = part.get("type")
        if kind == "text":
            texts.append(str(part.get("text") or ""))
        elif kind == "image_url":
            data_url = common.parse_data_url(common.image_url_of(part))
            if not data_url:
                raise common.unsupported(
                    "Ollama takes images inline: send them as base64 data URLs.", "image_url"
                )
            images.append(data_url[1])
        else:
            raise common.unsupported(f"Content parts of type {kind!r} are not supported.")
    message: dict[str, Any] = {"role": "user", "content": "\n".join(texts)}
    if images:
        message["images"] = images
    return message


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = common.tool_names_by_id(messages)
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            out.append({"role": "system", "content": common.text_of(message.get("content"))})
        elif role == "user":
            out.append(_user_message(message.get("content")))
        elif role == "assistant":
            item: dict[str, Any] = {
                "role": "assistant",
                "content": common.text_of(message.get("content"), ""),
            }
            calls = [
                {
                    "function": {
                        "name": (call.get("function") or {}).get("name"),
                        "arguments": common.parse_arguments(
                            (call.get("function") or {}).get("arguments")
                        ),
                    }
                }
                for call in message.get("tool_calls") or []
            ]
            if calls:
                item["tool_calls"] = calls
            out.append(item)
        elif role == "tool":
            item = {"role": "tool", "content": common.text_of(message.get("content"))}
            name = names.get(str(message.get("tool_call_id")))
            if name:
                item["tool_name"] = name
            out.append(item)
        else:
            raise common.unsupported(
                "Legacy 'function' messages are not supported; use tools.", "messages"
            )
    return out


def to_ollama(target: Target, body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    common.single_choice(body, "Ollama")
    payload: dict[str, Any] = {
        "model": target.upstream_model,
        "messages": _messages(body.get("messages") or []),
        "stream": stream,
    }
    options: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty"):
        if body.get(name) is not None:
            options[name] = body[name]
    if common.max_tokens_of(body):
        options["num_predict"] = common.max_tokens_of(body)
    if common.stop_list(body):
        options["stop"] = common.stop_list(body)
    options.update(target.options.get("ollama_options") or {})
    if options:
        payload["options"] = options
    json_format = common.json_schema_of(body)
    if json_format is not None:
        payload["format"] = json_format[1] or "json"
    functions = common.function_tools(body)
    if functions and body.get("tool_choice") != "none":
        payload["tools"] = [{"type": "function", "function": fn} for fn in functions]
    if target.options.get("keep_alive") is not None:
        payload["keep_alive"] = target.options["keep_alive"]
    return payload


def calls_from(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        calls.append(
            common.tool_call(
                str(call.get("id") or common.new_id("call_")),
                str(function.get("name") or ""),
                arguments if isinstance(arguments, str) else common.dumps(arguments or {}),
            )
        )
    return calls


@register
class OllamaAdapter(ProviderAdapter):
    kind = "ollama"
    label = "Ollama (native API)"
    default_base_url = "http://localhost:11434"
    base_url_suffixes = ("/api", "/v1")
    supports_embeddings = True

    def _headers(self, target: Target) -> dict[str, str]:
        return common.request_headers(target, {"authorization": f"Bearer {target.credential}"})

    async def chat(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        response = await common.post_json(
            target,
            self.url(target, "/api/chat"),
            to_ollama(target, body, stream=False),
            self._headers(target),
            partial(error_from_body, target.provider_name),
        )
        if response.get("error"):
            raise common.upstream_error(target.provider_name, 500, str(response["error"]))
        message = response.get("message") or {}
        calls = calls_from(message)
        return common.completion_object(
            id=common.new_id(),
            model=response.get("model") or target.upstream_model,
            choices=[
                {
                    "message": common.assistant_message(message.get("content") or "", calls),
                    "finish_reason": finish_reason(response, bool(calls)),
                }
            ],
            usage=usage_from(response),
        )

    async def stream_chat(
        self, target: Target, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        out = common.ChunkWriter(target.upstream_model)
        tools = 0
        async with common.open_stream(
            target,
            self.url(target, "/api/chat"),
            to_ollama(target, body, stream=True),
            {**self._headers(target), "accept": "application/x-ndjson"},
            partial(error_from_body, target.provider_name),
        ) as response:
            started = done = False
            async for line in response.aiter_lines():
                if done or not line.strip():
                    continue  # after "done", read to the end so the connection can be reused
                event = common.loads_or_none(line)
                if not isinstance(event, dict):
                    raise ProviderError(
                        f"provider {target.provider_name} sent an invalid stream line", status=502
                    )
                if event.get("error"):
                    raise common.upstream_error(target.provider_name, 500, str(event["error"]))
                if not started:
                    # Only now: an error line before any output still lets the pipeline fail over.
                    started = True
                    yield out.role()
                message = event.get("message") or {}
                if message.get("content"):
                    yield out.text(message["content"])
                for call in calls_from(message):
                    function = call["function"]
                    yield out.tool_start(tools, call["id"], function["name"], function["arguments"])
                    tools += 1
                if event.get("done"):
                    yield out.finish(finish_reason(event, tools > 0))
                    yield out.usage(usage_from(event))
                    done = True
        if not done:
            raise common.stream_ended_early(target.provider_name)

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if not all(isinstance(text, str) for text in inputs):
            raise common.unsupported("Ollama embeds text only, not token arrays.", "input")
        payload: dict[str, Any] = {"model": target.upstream_model, "input": inputs}
        if body.get("dimensions"):
            payload["dimensions"] = body["dimensions"]
        if target.options.get("keep_alive") is not None:
            payload["keep_alive"] = target.options["keep_alive"]
        response = await common.post_json(
            target,
            self.url(target, "/api/embed"),
            payload,
            self._headers(target),
            partial(error_from_body, target.provider_name),
        )
        tokens = int(response.get("prompt_eval_count") or 0)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector}
                for i, vector in enumerate(response.get("embeddings") or [])
            ],
            "model": target.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def list_models(self, target: Target) -> list[str]:
        page = await common.get_json(
            target,
            self.url(target, "/api/tags"),
            self._headers(target),
            partial(error_from_body, target.provider_name),
        )
        return [
            str(m.get("name") or m.get("model"))
            for m in page.get("models") or []
            if isinstance(m, dict) and (m.get("name") or m.get("model"))
        ]
