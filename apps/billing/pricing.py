"""Exact cost: tokens times the price in effect when the request started."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class PriceInfo:
    id: int | None
    effective_from: float
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    long_context_threshold: int | None = None
    long_context_input: Decimal | None = None
    long_context_output: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _int(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def usage_from_openai(data: dict[str, Any] | None, *, estimated: bool = False) -> Usage:
    """Read an OpenAI ``usage`` object (prompt tokens include cached ones; completion
    tokens include reasoning ones, as OpenAI counts them)."""
    if not data:
        return Usage(estimated=estimated)
    prompt_details = data.get("prompt_tokens_details") or {}
    completion_details = data.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=_int(data.get("prompt_tokens", data.get("input_tokens"))),
        completion_tokens=_int(data.get("completion_tokens", data.get("output_tokens"))),
        cached_tokens=_int(prompt_details.get("cached_tokens")),
        cache_write_tokens=_int(
            prompt_details.get("cache_creation_tokens") or prompt_details.get("cache_write_tokens")
        ),
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
        estimated=estimated,
    )


def price_at(prices: tuple[PriceInfo, ...], at: float) -> PriceInfo | None:
    """The price in effect at ``at`` (prices sorted newest first)."""
    for price in prices:
        if price.effective_from <= at:
            return price
    return prices[-1] if prices else None


def cost_usd(price: PriceInfo | None, usage: Usage) -> Decimal:
    if price is None:
        return Decimal(0)
    long_context = (
        price.long_context_threshold is not None
        and usage.prompt_tokens > price.long_context_threshold
    )
    input_rate = (
        price.long_context_input
        if long_context and price.long_context_input is not None
        else price.input
    )
    output_rate = (
        price.long_context_output
        if long_context and price.long_context_output is not None
        else price.output
    )
    cached_rate = price.cached_input if price.cached_input is not None else input_rate
    write_rate = price.cache_write if price.cache_write is not None else input_rate
    reasoning_rate = price.reasoning if price.reasoning is not None else output_rate
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
    plain_input = usage.prompt_tokens - cached - written
    reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
    plain_output = usage.completion_tokens - reasoning
    total = (
        plain_input * input_rate
        + cached * cached_rate
        + written * write_rate
        + plain_output * output_rate
        + reasoning * reasoning_rate
    )
    return total / MILLION


def max_cost_usd(price: PriceInfo | None, *, prompt_tokens: int, max_output_tokens: int) -> Decimal:
    """The most a request can cost: its prompt estimate at input price, every possible
    output token at the output price (reasoning priced higher counts at that rate)."""
    if price is None:
        return Decimal(0)
    long_context = (
        price.long_context_threshold is not None and prompt_tokens > price.long_context_threshold
    )
    input_rate = (
        price.long_context_input
        if long_context and price.long_context_input is not None
        else price.input
    )
    output_rate = (
        price.long_context_output
        if long_context and price.long_context_output is not None
        else price.output
    )
    write_rate = price.cache_write if price.cache_write is not None else input_rate
    out_rate = max(output_rate, price.reasoning if price.reasoning is not None else output_rate)
    return (prompt_tokens * max(input_rate, write_rate) + max_output_tokens * out_rate) / MILLION
