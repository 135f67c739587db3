"""The content-filtering engine: pure Python, no database, no Django.

A tenant's policies compile (:func:`compile_policies`) into a :class:`CompiledPolicy`
holding one tuple of rules per direction. Every rule (a detector, the blocked terms of
one action, a tenant's regex) finds spans; spans are then resolved the same way for
whole texts and for streams:

* any ``block`` span blocks: input answers 400, output stops at the span's start;
* ``redact`` spans are replaced by ``[REDACTED:LABEL]``; overlapping ones merge;
* ``flag`` spans leave the text alone and are reported.

Streaming (:class:`StreamFilter`) emits text as soon as no rule can still match
across it. For each rule it asks how far back a match could still be in progress:
the trailing run of characters the rule can consume (from the pattern's parse tree,
see :mod:`apps.guardrails.patterns`), never more than the rule's reach; for blocked
terms, the earliest position whose tail is a prefix of a term. Prose therefore lags by
about a word; phone and card rules hold back a trailing run of digits and separators.
A match that the whole text contains is found in the stream however the text is
chunked, so streaming and non-streaming answers are filtered identically. Tenant
regexes with no upper bound on their length are matched within a window of
:data:`USER_REGEX_REACH` characters when streaming.

From the request path (``policy`` from ``PolicyTable.policy_for``; ``None``: skip)::

    verdict = policy.check_input(messages)
    if verdict.blocked:
        raise verdict.error()              # 400 content_policy_violation
    messages = verdict.messages            # redacted copies

    flt = policy.output_filter()           # one per choice
    for delta in upstream_text:
        result = flt.feed(delta)           # send result.emit (may be "")
        if result.blocked:
            ...                            # finish_reason "content_filter", stop upstream
    result = flt.finish()                  # send before the finish_reason chunk
"""

from __future__ import annotations

import bisect
import functools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from apps.core.errors import ContentBlocked
from apps.guardrails.detectors import DETECTORS
from apps.guardrails.patterns import (
    MAX_LOOKBEHIND,
    PatternError,
    analyse,
    validate_pattern,
)

logger = logging.getLogger("gateway.guardrails")

CONTEXT = MAX_LOOKBEHIND  # sent characters kept for lookbehinds
USER_REGEX_REACH = 256
QUIET_HOLD = 16  # feed() only scans within a word once this much is held
TERM_LABEL = "BLOCKED_TERM"
PREFIX_REGEX_CHARS = 8000
_SPACES = re.compile(r"\s+")
_TERM_GAP = r"\s{1,8}"


class Action(StrEnum):
    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"


SEVERITY = {Action.FLAG: 1, Action.REDACT: 2, Action.BLOCK: 3}


class Source(StrEnum):
    DETECTOR = "detector"
    TERM = "term"
    REGEX = "regex"


@dataclass(frozen=True, slots=True)
class Finding:
    """What matched (never the matched text: findings are logged)."""

    label: str
    action: Action
    source: Source


def _labels(findings: Iterable[Finding], action: Action) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f.label for f in findings if f.action is action))


def _reason(findings: Iterable[Finding], what: str) -> str:
    labels = ", ".join(_labels(findings, Action.BLOCK)) or "policy"
    return f"The {what} was blocked by the content policy ({labels})."


@dataclass(frozen=True, slots=True)
class FilterResult:
    """``emit`` is the text to send now; after a block it is the clean text before it."""

    emit: str = ""
    blocked: bool = False
    findings: tuple[Finding, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        return _labels(self.findings, Action.FLAG)

    @property
    def redactions(self) -> tuple[str, ...]:
        return _labels(self.findings, Action.REDACT)

    @property
    def labels(self) -> tuple[str, ...]:
        """Labels of the spans that blocked."""
        return _labels(self.findings, Action.BLOCK)

    @property
    def reason(self) -> str:
        return _reason(self.findings, "response") if self.blocked else ""


EMPTY = FilterResult()


@dataclass(frozen=True, slots=True)
class InputVerdict:
    blocked: bool
    messages: list[dict[str, Any]]
    findings: tuple[Finding, ...] = ()
    redacted: bool = False

    @property
    def flags(self) -> tuple[str, ...]:
        return _labels(self.findings, Action.FLAG)

    @property
    def redactions(self) -> tuple[str, ...]:
        return _labels(self.findings, Action.REDACT)

    @property
    def labels(self) -> tuple[str, ...]:
        return _labels(self.findings, Action.BLOCK)

    @property
    def reason(self) -> str:
        return _reason(self.findings, "request") if self.blocked else ""

    def error(self) -> ContentBlocked:
        """The 400 ``content_policy_violation`` to raise for a blocked request."""
        return ContentBlocked(self.reason, param="messages")


# --- rules ---------------------------------------------------------------------------


class Rule:
    """A pattern with an action: finds spans, and says how much of a stream to hold."""

    __slots__ = ("action", "check", "hint", "label", "reach", "regex", "run", "source")

    def __init__(
        self,
        *,
        regex: re.Pattern[str],
        label: str,
        action: Action,
        source: Source,
        reach: int,
        alphabet: str | None,
        check=None,
        hint: str | None = None,
    ) -> None:
        self.regex = regex
        self.label = label
        self.action = action
        self.source = source
        self.reach = reach
        self.run = re.compile(alphabet + "*") if alphabet else None
        self.check = check
        self.hint = hint

    def find(self, text: str, pos: int = 0) -> Iterator[tuple[int, int]]:
        """Confirmed spans starting at ``pos`` or later, in order.

        A rejected candidate (a Luhn-invalid card) hides nothing: the search goes on
        from its second character. So which spans are found after a position never
        depends on where scanning began, as long as it did not begin inside a
        confirmed span, which is what lets a stream be scanned piecewise.
        """
        check, search = self.check, self.regex.search
        while True:
            match = search(text, pos)
            if match is None:
                return
            start = match.start()
            end = match.end() if check is None else check(match)
            if end is None:
                pos = start + 1
                continue
            yield start, end
            pos = end if end > start else start + 1

    def hold(self, buf: str, lo: int, n: int, run_start: int) -> int:
        """The earliest start in ``buf[lo:n]`` where a match may still be in progress:
        within reach of the end, and inside the trailing run (``run_start``, kept up to
        date by the stream as text arrives)."""
        floor = n - self.reach
        if run_start > floor:
            floor = run_start
        return floor if floor > lo else lo


def _trie(terms: Iterable[str]) -> dict:
    root: dict = {}
    for term in terms:
        node = root
        for char in term:
            node = node.setdefault(char, {})
        node[""] = {}  # a term ends here
    return root


def _piece(char: str) -> str:
    return _TERM_GAP if char == " " else re.escape(char)


def _trie_alternatives(node: dict) -> str:
    """A node's continuations as a regex; longer ones first (greedy), then the end."""
    alternatives = []
    for char, child in node.items():
        if not char:
            continue
        text = _piece(char)
        while len(child) == 1 and "" not in child:  # a chain without branches
            ((char, child),) = child.items()
            text += _piece(char)
        alternatives.append(text + _trie_alternatives(child))
    if not alternatives:
        return ""
    body = "(?:" + "|".join(alternatives) + ")"
    return body + "?" if "" in node else body


def _terms_pattern(terms: Iterable[str], *, prefixes: bool = False) -> str:
    """Whole terms, any case, as a trie: a thousand terms cost little more than ten.

    The first character is a plain class (both cases) so the engine can skip in C to
    where a term may start; each branch re-reads it with a lookbehind. With
    ``prefixes`` the pattern matches any beginning of a term at the end of the text.
    """
    terms = list(terms)
    if prefixes:
        terms = [t[:i] for t in terms for i in range(1, len(t) + 1)]
    root = _trie(terms)
    firsts = sorted({c for first in root for c in (first, first.upper(), first.title())})
    branches = "|".join(
        f"(?<={re.escape(first)}){_trie_alternatives(child)}" for first, child in root.items()
    )
    first_class = "[" + "".join(re.escape(c) for c in firsts) + "]"
    end = r"\Z" if prefixes else r"(?!\w)"
    return rf"{first_class}(?<!\w.)(?i:{branches}){end}"


class TermRule(Rule):
    """Blocked terms: case-insensitive, whole words, any whitespace between words.

    Its hold is exact: the earliest position where the text's tail begins a term. Up to
    :data:`PREFIX_REGEX_CHARS` characters of terms, one regex of every term's prefixes
    finds it; past that such a regex takes seconds to compile, and the tails at word
    starts are looked up in the sorted terms instead.
    """

    __slots__ = ("gaps", "prefix", "sorted_terms", "starts", "window")

    def __init__(self, terms: Sequence[str], action: Action) -> None:
        terms = sorted({t.lower() for t in terms})
        window = max(len(t) + 7 * t.count(" ") for t in terms)
        super().__init__(
            regex=re.compile(_terms_pattern(terms)),
            label=TERM_LABEL,
            action=action,
            source=Source.TERM,
            reach=window + 1,
            alphabet=None,
        )
        self.window = window
        self.prefix = self.starts = None
        if sum(len(t) for t in terms) <= PREFIX_REGEX_CHARS:
            self.prefix = re.compile(_terms_pattern(terms, prefixes=True))
        else:
            firsts = sorted({c for t in terms for c in (t[0], t[0].upper(), t[0].title())})
            self.starts = re.compile("[" + "".join(map(re.escape, firsts)) + r"](?<!\w.)")
        self.sorted_terms = terms
        self.gaps = any(" " in t for t in terms)

    def hold(self, buf: str, lo: int, n: int, run_start: int) -> int:
        start = n - self.window
        if start < lo:
            start = lo
        if self.prefix is not None:
            match = self.prefix.search(buf, start)
            return n if match is None else match.start()
        terms = self.sorted_terms
        for match in self.starts.finditer(buf, start):
            tail = buf[match.start() : n].lower()
            if self.gaps:
                tail = _SPACES.sub(" ", tail)
            index = bisect.bisect_left(terms, tail)
            if index < len(terms) and terms[index].startswith(tail):
                return match.start()
        return n


@functools.cache
def _detector_rule(name: str, action: Action) -> Rule:
    detector = DETECTORS[name]
    info = analyse(detector.pattern)
    return Rule(
        regex=re.compile(detector.pattern),
        label=detector.label,
        action=action,
        source=Source.DETECTOR,
        reach=info.reach,
        alphabet=info.alphabet,
        check=detector.check,
        hint=detector.hint,
    )


# Compiled rules are immutable and shared: a reload after an unrelated change (a new
# key) reuses them instead of compiling every tenant's patterns again.
@functools.lru_cache(maxsize=1024)
def _term_rule(terms: tuple[str, ...], action: Action) -> TermRule:
    return TermRule(terms, action)


@functools.lru_cache(maxsize=4096)
def _regex_rule(pattern: str, label: str, action: Action) -> Rule:
    info = validate_pattern(pattern)
    return Rule(
        regex=re.compile(pattern),
        label=label,
        action=action,
        source=Source.REGEX,
        reach=min(info.reach, USER_REGEX_REACH),
        alphabet=info.alphabet,
    )


# --- resolving spans -------------------------------------------------------------------

Span = tuple[int, int, Rule]


def _resolve(text: str, lo: int, cut: int, spans: list[Span]) -> tuple[str, bool, tuple]:
    """Apply ``spans`` (inside ``[lo, cut)``) to ``text[lo:cut]``."""
    if not spans:
        return text[lo:cut], False, ()
    spans.sort(key=lambda s: (s[0], -s[1]))
    findings = tuple(Finding(r.label, r.action, r.source) for _, _, r in spans)
    end = cut
    blocks = [s for s, _, r in spans if r.action is Action.BLOCK]
    blocked = bool(blocks)
    if blocked:
        end = min(blocks)
        moved = True
        while moved:  # never send half of a redaction that straddles the block
            moved = False
            for s, e, r in spans:
                if r.action is Action.REDACT and s < end < e:
                    end, moved = s, True
    out: list[str] = []
    pos = lo
    for s, e, r in spans:
        if r.action is not Action.REDACT or s >= end:
            continue
        if s < pos:  # overlaps the previous redaction: extend it
            pos = max(pos, e)
            continue
        out.append(text[pos:s])
        out.append(f"[REDACTED:{r.label}]")
        pos = e
    if pos < end:
        out.append(text[pos:end])
    return "".join(out), blocked, findings


def _spans(rules: Sequence[Rule], text: str, lo: int, before: int) -> list[Span]:
    spans: list[Span] = []
    for rule in rules:
        if rule.hint is not None and text.find(rule.hint, lo) < 0:
            continue
        first = rule.regex.search(text, lo)  # usually None: one call, no generator
        if first is None or first.start() >= before:
            continue
        for s, e in rule.find(text, lo):
            if s >= before:
                break
            spans.append((s, e, rule))
    return spans


def scan_text(rules: Sequence[Rule], text: str) -> FilterResult:
    if not rules or not text:
        return FilterResult(text)
    n = len(text)
    emit, blocked, findings = _resolve(text, 0, n, _spans(rules, text, 0, n))
    return FilterResult(emit, blocked, findings)


# --- streams -------------------------------------------------------------------------


class StreamFilter:
    """Filters one stream of output text (one per choice).

    ``feed`` returns the text that is safe to send now; the rest is held until it
    cannot be part of a match. After a block, the result says so once more text
    arrives and nothing else is emitted; ``finish`` sends the held tail.

    Work per chunk is proportional to the chunk plus the text held back, and text is
    only rescanned once a fair share of it (an eighth) can be released, so a long run
    that must be held (a 2 KB base64 blob) costs a few scans, not one per chunk.
    """

    __slots__ = ("_buf", "_done", "_lo", "_measured", "_measures", "_rules", "_runs", "blocked")

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(rules)
        self._buf = ""
        self._lo = 0  # buf[:lo] was sent already (kept for lookbehinds)
        self._runs = [0] * len(self._rules)  # where each rule's trailing run starts
        self._measured = 0  # runs are measured up to here
        self._measures = tuple(
            (index, rule.run.match) for index, rule in enumerate(self._rules) if rule.run
        )
        self._done = False
        self.blocked = False

    @property
    def held(self) -> int:
        """How many received characters are not sent yet."""
        return len(self._buf) - self._lo

    def feed(self, text: str) -> FilterResult:
        if self.blocked:
            return FilterResult(blocked=True)
        if self._done:
            raise RuntimeError("feed() after finish()")
        if not text:
            return EMPTY
        if not self._rules:
            return FilterResult(text)
        self._buf += text
        if text.isalnum() and len(self._buf) - self._lo < QUIET_HOLD:
            # Within a word: holding a little longer is always safe, most rules would
            # hold the word being written anyway, and skipping halves the work on prose.
            return EMPTY
        return self._advance(final=False)

    def finish(self) -> FilterResult:
        if self.blocked:
            return FilterResult(blocked=True)
        if self._done:
            return EMPTY
        result = self._advance(final=True) if self._rules else EMPTY
        self._done = True
        self._buf, self._lo = "", 0
        return result

    def _measure(self, buf: str, n: int) -> None:
        """Bring each rule's trailing run up to date with the text that arrived since the
        last call: measured on that text only; if all of it belongs to the run, the run
        goes on from where it started."""
        new = buf[self._measured : n]
        size, reversed_text, runs = len(new), new[::-1], self._runs
        for index, measure in self._measures:
            length = measure(reversed_text).end()
            if length < size:
                runs[index] = n - length
        self._measured = n

    def _advance(self, *, final: bool) -> FilterResult:
        buf, lo, rules = self._buf, self._lo, self._rules
        n = len(buf)
        if n == lo:
            return EMPTY
        cut = n
        if not final:
            self._measure(buf, n)
            for rule, run_start in zip(rules, self._runs, strict=True):
                held = rule.hold(buf, lo, n, run_start)
                if held < cut:
                    cut = held
                    if cut == lo:
                        return EMPTY
            if (cut - lo) * 8 < n - lo:
                return EMPTY
        spans = _spans(rules, buf, lo, cut)
        if spans and not final:
            # Matches that start before the cut are final, but may end after it.
            moved = True
            while moved:
                moved = False
                for s, e, _ in spans:
                    if s < cut < e:
                        cut, moved = s, True
            spans = [span for span in spans if span[0] < cut]
            if cut == lo:
                return EMPTY
        emit, blocked, findings = _resolve(buf, lo, cut, spans)
        if blocked:
            self.blocked = True
            self._buf, self._lo = "", 0
        else:
            keep = cut - CONTEXT if cut > CONTEXT else 0
            if keep:
                self._buf = buf[keep:]
                self._runs = [r - keep if r > keep else 0 for r in self._runs]
                self._measured -= keep
            self._lo = cut - keep
        if not emit and not findings and not blocked:
            return EMPTY
        return FilterResult(emit, blocked, findings)


# --- policies --------------------------------------------------------------------------


@dataclass(frozen=True)
class RegexRule:
    pattern: str
    action: Action
    label: str


@dataclass(frozen=True)
class PolicySpec:
    """One policy's settings as plain data (the model's fields, validated)."""

    name: str = ""
    applies_to_input: bool = True
    applies_to_output: bool = True
    blocked_terms: tuple[str, ...] = ()
    blocked_terms_action: Action = Action.BLOCK
    regex_rules: tuple[RegexRule, ...] = ()
    detectors: dict[str, Action] = field(default_factory=dict)


class CompiledPolicy:
    """The merged, precompiled policies of one scope (a tenant, or one key).

    Immutable and shared by all requests of the process: :meth:`output_filter` makes
    the per-stream state.
    """

    __slots__ = ("input_rules", "names", "output_rules")

    def __init__(
        self, input_rules: Sequence[Rule], output_rules: Sequence[Rule], names: Sequence[str]
    ) -> None:
        self.input_rules = tuple(input_rules)
        self.output_rules = tuple(output_rules)
        self.names = tuple(names)

    def __repr__(self) -> str:
        return (
            f"<CompiledPolicy {', '.join(self.names) or '-'}: {len(self.input_rules)} input "
            f"rule(s), {len(self.output_rules)} output rule(s)>"
        )

    @property
    def filters_input(self) -> bool:
        return bool(self.input_rules)

    @property
    def filters_output(self) -> bool:
        return bool(self.output_rules)

    @property
    def is_empty(self) -> bool:
        return not (self.input_rules or self.output_rules)

    def check_input(self, messages: Sequence[dict[str, Any]]) -> InputVerdict:
        """Check the text of every message (string content and text parts, any role).

        The caller's messages are never changed: redactions come back in new dicts.
        """
        out = list(messages)
        rules = self.input_rules
        if not rules:
            return InputVerdict(False, out)
        findings: list[Finding] = []
        redacted = False
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                result = scan_text(rules, content)
                findings.extend(result.findings)
                if result.blocked:
                    return InputVerdict(True, out, tuple(findings))
                if result.emit != content:
                    out[index] = {**message, "content": result.emit}
                    redacted = True
            elif isinstance(content, list):
                parts: list[Any] | None = None
                for number, part in enumerate(content):
                    if not (isinstance(part, dict) and part.get("type") == "text"):
                        continue
                    text = part.get("text")
                    if not isinstance(text, str):
                        continue
                    result = scan_text(rules, text)
                    findings.extend(result.findings)
                    if result.blocked:
                        return InputVerdict(True, out, tuple(findings))
                    if result.emit != text:
                        if parts is None:
                            parts = list(content)
                        parts[number] = {**part, "text": result.emit}
                if parts is not None:
                    out[index] = {**message, "content": parts}
                    redacted = True
        return InputVerdict(False, out, tuple(findings), redacted)

    def check_input_text(self, text: str) -> FilterResult:
        """One input text (a completions prompt, an embeddings input)."""
        return scan_text(self.input_rules, text)

    def filter_output_text(self, text: str) -> FilterResult:
        """A whole (non-streamed) answer; same result as streaming it."""
        return scan_text(self.output_rules, text)

    def output_filter(self) -> StreamFilter:
        return StreamFilter(self.output_rules)


def _strongest(a: Action | None, b: Action) -> Action:
    return b if a is None or SEVERITY[b] > SEVERITY[a] else a


def _direction_rules(specs: Sequence[PolicySpec]) -> list[Rule]:
    detectors: dict[str, Action] = {}
    terms: dict[str, Action] = {}
    regexes: dict[tuple[str, str], Action] = {}
    for spec in specs:
        for name, action in spec.detectors.items():
            if name in DETECTORS:
                detectors[name] = _strongest(detectors.get(name), Action(action))
        for term in spec.blocked_terms:
            key = term.lower()
            terms[key] = _strongest(terms.get(key), Action(spec.blocked_terms_action))
        for rule in spec.regex_rules:
            key = (rule.pattern, rule.label)
            regexes[key] = _strongest(regexes.get(key), Action(rule.action))
    rules = [_detector_rule(name, detectors[name]) for name in DETECTORS if name in detectors]
    for action in Action:
        group = tuple(sorted(t for t, a in terms.items() if a is action))
        if group:
            rules.append(_term_rule(group, action))
    for (pattern, label), action in regexes.items():
        try:
            rules.append(_regex_rule(pattern, label, action))
        except PatternError as exc:  # validated on save; a newer Python may disagree
            logger.error("guardrail regex skipped", extra={"label": label, "error": str(exc)})
    return rules


def compile_policies(specs: Iterable[PolicySpec]) -> CompiledPolicy:
    """Merge policies into one: rule lists add up; for the same detector, term or
    regex the strongest action wins (block over redact over flag)."""
    specs = list(specs)
    return CompiledPolicy(
        _direction_rules([s for s in specs if s.applies_to_input]),
        _direction_rules([s for s in specs if s.applies_to_output]),
        [s.name for s in specs],
    )
