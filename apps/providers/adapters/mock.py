"""The built-in ``mock`` provider: deterministic, streams, costs nothing.

Options (on the provider or the deployment): ``latency_ms`` before the first token,
``tokens_per_second`` for the pace of the answer (0: as fast as possible),
``reply`` to fix the answer. A last user message starting with ``echo:`` is answered
with the rest of it verbatim, which tests use to control the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from apps.providers.adapters.base import ProviderAdapter, Target, register
from apps.providers.tokens import estimate_prompt_tokens, message_text, split_tokens

_WORDS = [
    "the",
    "gateway",
    "routes",
    "every",
    "request",
    "to",
    "a",
    "healthy",
    "deployment",
    "and",
    "records",
    "its",
    "exact",
    "cost",
    "while",
    "streaming",
    "tokens",
    "back",
    "as",
    "they",
    "arrive",
    "so",
    "that",
    "applications",
    "stay",
    "fast",
    "predictable",
    "and",
    "within",
    "budget",
]


def mock_reply(messages: list[dict[str, Any]], model: str) -> str:
    last = next(
        (message_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    if last.startswith("echo:"):
        return last[5:].lstrip()
    seed = hashlib.sha256(f"{model}\n{last}".encode()).digest()
    words = [_WORDS[b % len(_WORDS)] for b in seed[:20]]
    return f"Mock answer from {model}: " + " ".join(words).capitalize() + "."


def mock_embedding(text: str, dimensions: int) -> list[float]:
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    vector = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 6) for v in vector]


@register
class MockAdapter(ProviderAdapter):
    kind = "mock"
    label = "Mock (built in)"
    supports_embeddings = True

    def _plan(self, target: Target, body: dict[str, Any]) -> tuple[list[str], str, int]:
        reply = target.options.get("reply") or mock_reply(
            body.get("messages", []), target.upstream_model
        )
        pieces = split_tokens(reply)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and 0 < limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        return pieces, finish, estimate_prompt_tokens(body.get("messages", []))

    @staticmethod
    def _usage(prompt: int, completion: int) -> dict[str, Any]:
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    async def _wait_first(self, target: Target) -> None:
        latency = float(target.options.get("latency_ms", 0)) / 1000
        if latency > 0:
            await asyncio.sleep(latency)

    async def chat(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        pieces, finish, prompt = self._plan(target, body)
        await self._wait_first(target)
        rate = float(target.options.get("tokens_per_second", 0))
        if rate > 0:
            await asyncio.sleep(len(pieces) / rate)
        n = max(1, int(body.get("n") or 1))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": target.upstream_model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for i in range(n)
            ],
            "usage": self._usage(prompt, len(pieces) * n),
            "system_fingerprint": "fp_mock",
        }

    async def stream_chat(
        self, target: Target, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        pieces, finish, prompt = self._plan(target, body)
        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": target.upstream_model,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }

        await self._wait_first(target)
        rate = float(target.options.get("tokens_per_second", 0))
        yield chunk({"role": "assistant", "content": ""})
        for piece in pieces:
            if rate > 0:
                await asyncio.sleep(1 / rate)
            yield chunk({"content": piece})
        yield chunk({}, finish)
        yield {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": target.upstream_model,
            "choices": [],
            "usage": self._usage(prompt, len(pieces)),
        }

    async def embed(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        await self._wait_first(target)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dimensions = int(body.get("dimensions") or target.options.get("dimensions", 16))
        texts = [i if isinstance(i, str) else " ".join(map(str, i)) for i in inputs]
        tokens = sum(max(1, len(split_tokens(t))) for t in texts)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": mock_embedding(t, dimensions)}
                for i, t in enumerate(texts)
            ],
            "model": target.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def list_models(self, target: Target) -> list[str]:
        return list(target.options.get("models", ["mock-small", "mock-large"]))

    async def check(self, target: Target) -> str:
        return "ok: the mock provider is built in"
