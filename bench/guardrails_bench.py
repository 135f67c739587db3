"""Guardrails engine micro-benchmark: CPU per KB for input checks and output streams.

Pure engine, no database or server:

    .venv/bin/python bench/guardrails_bench.py            # default matrix
    .venv/bin/python bench/guardrails_bench.py --repeat 9 # steadier minimums

Prints, per policy and text: µs per KB to check a prompt (``check_input``), to filter
a whole answer (``filter_output_text``), to stream it in token-sized chunks (about
four characters, as ``apps.providers.tokens.split_tokens`` cuts them) and one character
at a time, plus µs per streamed token and the most characters the stream held back.
Figures are the best of ``--repeat`` runs (other load only ever makes them worse).
Not run by CI.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.guardrails.detectors import DETECTORS
from apps.guardrails.engine import CompiledPolicy, compile_policies
from apps.guardrails.validation import policy_spec
from apps.providers.tokens import split_tokens

PROSE = (
    "The quarterly report shows revenue grew 12% to $1,234,567 in 2024 (see table 3). "
    "Our team shipped version 1.2.3 on Monday at 10:30 UTC; the rollout went smoothly. "
    "Next steps: 1) review the budget, 2) hire two engineers, 3) plan the offsite. "
    "Questions? Reply to this thread or ask in the channel before Friday.\n"
)
CODE = (
    "def handler(event, context):\n"
    "    items = [x for x in event.get('items', []) if x['qty'] > 0]\n"
    "    total = sum(i['price'] * i['qty'] for i in items)  # cents\n"
    "    logger.info('order %s total=%d', event['id'], total)\n"
    "    return {'statusCode': 200, 'body': json.dumps({'total': total})}\n"
)
PII = (
    "Contact Jane at jane.doe@example.com or +1 (415) 555-2671; card 4111 1111 1111 1111, "
    "IBAN DE89 3704 0044 0532 0130 00, SSN 123-45-6789, key sk-proj-Ab3dEf6hIj9kLm2nOp5q. "
)
TEXTS = {"prose": PROSE * 12, "code": CODE * 14, "pii": PII * 10}


def policies() -> dict[str, CompiledPolicy]:
    every = {name: "redact" for name in DETECTORS}
    terms = [f"forbidden phrase {i}" for i in range(20)] + ["confidential", "top secret"]
    regexes = [
        {"pattern": r"\bPRJ-\d{4}\b", "action": "flag", "label": "project"},
        {"pattern": r"(?i)internal[ -]only", "action": "redact", "label": "internal"},
    ]
    return {
        "detectors": compile_policies([policy_spec(detectors=every)]),
        "typical": compile_policies(
            [policy_spec(detectors=every, blocked_terms=terms, regex_rules=regexes)]
        ),
        "1000 terms": compile_policies(
            [policy_spec(blocked_terms=[f"term{i} word{i % 7}" for i in range(1000)])]
        ),
    }


def best(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def stream(policy: CompiledPolicy, pieces: list[str]) -> int:
    flt = policy.output_filter()
    held = 0
    for piece in pieces:
        flt.feed(piece)
        held = max(held, flt.held)
    flt.finish()
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    header = (
        f"{'policy':<11} {'text':<6} {'KB':>5} {'input µs/KB':>12} {'whole µs/KB':>12} "
        f"{'stream µs/KB':>13} {'µs/token':>9} {'1-char µs/KB':>13} {'max held':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, policy in policies().items():
        for label, text in TEXTS.items():
            kb = len(text.encode()) / 1024
            tokens = split_tokens(text)
            chars = list(text)
            messages = [{"role": "user", "content": text}]
            t_input = best(args.repeat, lambda p=policy, m=messages: p.check_input(m))
            t_whole = best(args.repeat, lambda p=policy, t=text: p.filter_output_text(t))
            t_stream = best(args.repeat, lambda p=policy, s=tokens: stream(p, s))
            t_chars = best(max(1, args.repeat // 2), lambda p=policy, s=chars: stream(p, s))
            held = stream(policy, chars)
            print(
                f"{name:<11} {label:<6} {kb:>5.1f} {t_input / kb * 1e6:>12.1f} "
                f"{t_whole / kb * 1e6:>12.1f} {t_stream / kb * 1e6:>13.1f} "
                f"{t_stream / len(tokens) * 1e6:>9.2f} {t_chars / kb * 1e6:>13.1f} {held:>9}"
            )


if __name__ == "__main__":
    main()
