from __future__ import annotations

from decimal import Decimal

from apps.billing.pricing import (
    PriceInfo,
    Usage,
    cost_usd,
    max_cost_usd,
    price_at,
    usage_from_openai,
)

D = Decimal


def price(**rates) -> PriceInfo:
    base = {"id": 1, "effective_from": 0.0, "input": D("3"), "output": D("15")}
    return PriceInfo(**{**base, **rates})


def test_plain_input_and_output():
    assert cost_usd(price(), Usage(prompt_tokens=1000, completion_tokens=200)) == D("0.006")


def test_cached_reads_cache_writes_and_reasoning_have_their_own_rates():
    p = price(cached_input=D("0.3"), cache_write=D("3.75"), reasoning=D("60"))
    usage = Usage(
        prompt_tokens=1000,
        completion_tokens=500,
        cached_tokens=600,
        cache_write_tokens=100,
        reasoning_tokens=200,
    )
    # 300 plain input * 3 + 600 cached * 0.3 + 100 written * 3.75 + 300 output * 15 + 200 reasoning * 60
    expected = (
        300 * D(3) + 600 * D("0.3") + 100 * D("3.75") + 300 * D(15) + 200 * D(60)
    ) / 1_000_000
    assert cost_usd(p, usage) == expected


def test_missing_special_rates_fall_back_to_input_and_output():
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cached_tokens=400, reasoning_tokens=50)
    assert cost_usd(price(), usage) == (1000 * D(3) + 100 * D(15)) / 1_000_000


def test_long_context_tier_applies_to_the_whole_request():
    p = price(
        long_context_threshold=200_000, long_context_input=D("6"), long_context_output=D("22.5")
    )
    assert (
        cost_usd(p, Usage(prompt_tokens=200_000, completion_tokens=10))
        == (200_000 * D(3) + 10 * D(15)) / 10**6
    )
    assert (
        cost_usd(p, Usage(prompt_tokens=200_001, completion_tokens=10))
        == (200_001 * D(6) + 10 * D("22.5")) / 10**6
    )


def test_price_in_effect_at_request_time():
    old, new = (
        price(id=1, effective_from=100.0, input=D(1)),
        price(id=2, effective_from=200.0, input=D(2)),
    )
    history = (new, old)  # newest first
    assert price_at(history, 150.0).id == 1
    assert price_at(history, 200.0).id == 2
    assert price_at(history, 50.0).id == 1  # before any price: the oldest one


def test_usage_from_openai_reads_details():
    usage = usage_from_openai(
        {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "prompt_tokens_details": {"cached_tokens": 100},
            "completion_tokens_details": {"reasoning_tokens": 10},
        }
    )
    assert (
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.cached_tokens,
        usage.reasoning_tokens,
    ) == (120, 30, 100, 10)


def test_reservation_covers_the_worst_case():
    p = price(reasoning=D("60"))
    assert (
        max_cost_usd(p, prompt_tokens=100, max_output_tokens=50)
        == (100 * D(3) + 50 * D(60)) / 10**6
    )
