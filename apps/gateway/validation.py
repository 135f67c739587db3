"""Validation of OpenAI-format request bodies: clear 400s naming the offending parameter.

Fields the gateway does not know pass through untouched, so new OpenAI parameters
keep working; the ones it knows are type-checked.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings

from apps.core.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
MAX_MESSAGES = 4096


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json")
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    _check_structure(body, settings.GATEWAY_MAX_JSON_DEPTH)
    return body


def _check_structure(value: Any, limit: int) -> None:
    """Refuse absurdly nested JSON (a cheap denial of service for whatever walks it later)
    NUL characters (which providers and databases choke on) and oversized text."""
    stack = [(value, 1)]
    chars, max_chars = 0, settings.GATEWAY_MAX_TEXT_CHARS
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise InvalidRequest(
                f"The request body is nested deeper than {limit} levels.", code="invalid_json"
            )
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, str):
                if "\x00" in child:
                    raise InvalidRequest(
                        "The request body contains a NUL character.", code="invalid_value"
                    )
                chars += len(child)
                if chars > max_chars:
                    raise InvalidRequest(
                        f"The request holds more than {max_chars} characters of text.",
                        code="content_too_long",
                    )
            elif isinstance(child, dict | list):
                stack.append((child, depth + 1))


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number" if isinstance(value, int | float) else type(value).__name__
    )


def _fail(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)}.",
        param=param,
        code="invalid_type",
    )


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest(
            "You must provide a model parameter.", param="model", code="missing_required_parameter"
        )
    if not isinstance(model, str) or not model.strip():
        raise _fail("model", "a non-empty string", model)
    return model


def _check(
    body: dict[str, Any],
    name: str,
    kinds: tuple[type, ...],
    expected: str,
    low: float | None = None,
    high: float | None = None,
) -> None:
    if name not in body or body[name] is None:
        return
    value = body[name]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise _fail(name, expected, value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidRequest(
            f"Invalid value for '{name}': {value} is outside [{low}, {high}].",
            param=name,
            code="invalid_value",
        )


def _content(content: Any, param: str, role: str) -> None:
    if content is None:
        if role not in ("assistant", "function"):
            raise _fail(param, "a string or an array of content parts", content)
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _fail(param, "a string or an array of content parts", content)
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise _fail(f"{param}[{j}]", "an object", part)
        if not isinstance(part.get("type"), str):
            raise InvalidRequest(
                f"Missing 'type' in '{param}[{j}]'.",
                param=f"{param}[{j}].type",
                code="invalid_value",
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise _fail(f"{param}[{j}].text", "a string", part.get("text"))


def validate_chat(body: dict[str, Any]) -> dict[str, Any]:
    _model(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest(
            "You must provide 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list):
        raise _fail("messages", "an array", messages)
    if not messages:
        raise InvalidRequest(
            "'messages' must contain at least one message.", param="messages", code="invalid_value"
        )
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(
            f"Too many messages: at most {MAX_MESSAGES}.", param="messages", code="invalid_value"
        )
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _fail(param, "an object", message)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(
                f"Invalid value for '{param}.role': expected one of {', '.join(sorted(ROLES))}.",
                param=f"{param}.role",
                code="invalid_value",
            )
        _content(message.get("content"), f"{param}.content", role)
        if "name" in message and not isinstance(message["name"], str):
            raise _fail(f"{param}.name", "a string", message["name"])
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise _fail(f"{param}.tool_call_id", "a string", message.get("tool_call_id"))
        if (
            "tool_calls" in message
            and message["tool_calls"] is not None
            and not isinstance(message["tool_calls"], list)
        ):
            raise _fail(f"{param}.tool_calls", "an array", message["tool_calls"])
    _check(body, "stream", (bool,), "a boolean")
    _check(body, "stream_options", (dict,), "an object")
    if body.get("stream_options") and not body.get("stream"):
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.",
            param="stream_options",
            code="invalid_value",
        )
    _check(body, "n", (int,), "an integer", 1, 128)
    _check(body, "max_tokens", (int,), "an integer", 1, None)
    _check(body, "max_completion_tokens", (int,), "an integer", 1, None)
    _check(body, "temperature", (int, float), "a number", 0, 2)
    _check(body, "top_p", (int, float), "a number", 0, 1)
    _check(body, "presence_penalty", (int, float), "a number", -2, 2)
    _check(body, "frequency_penalty", (int, float), "a number", -2, 2)
    _check(body, "seed", (int,), "an integer")
    _check(body, "logprobs", (bool,), "a boolean")
    _check(body, "top_logprobs", (int,), "an integer", 0, 20)
    _check(body, "user", (str,), "a string")
    _check(body, "tools", (list,), "an array")
    _check(body, "tool_choice", (str, dict), "a string or an object")
    _check(body, "response_format", (dict,), "an object")
    _check(body, "logit_bias", (dict,), "an object")
    _check(body, "stop", (str, list), "a string or an array of strings")
    if isinstance(body.get("stop"), list) and not all(isinstance(s, str) for s in body["stop"]):
        raise _fail("stop", "a string or an array of strings", body["stop"])
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise _fail(f"tools[{i}]", "an object with a 'type'", tool)
    return body


def validate_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    _model(body)
    value = body.get("input")
    if value is None:
        raise InvalidRequest(
            "You must provide 'input'.", param="input", code="missing_required_parameter"
        )
    ok = isinstance(value, str) or (
        isinstance(value, list)
        and value
        and (
            all(isinstance(v, str) for v in value)
            or all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value)
        )
    )
    if not ok:
        raise _fail("input", "a string, an array of strings, or token arrays", value)
    if isinstance(value, str) and not value:
        raise InvalidRequest(
            "'input' cannot be an empty string.", param="input", code="invalid_value"
        )
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'.",
            param="encoding_format",
            code="invalid_value",
        )
    _check(body, "dimensions", (int,), "an integer", 1, 65536)
    return body


def max_body_bytes() -> int:
    return settings.GATEWAY_MAX_BODY_BYTES
