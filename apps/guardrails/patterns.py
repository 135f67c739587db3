"""What a regular expression can match, read from its parse tree.

The streaming filter must know, for each rule, how far back in the unsent text a match
could still be starting. Two facts about a pattern answer that without running it:

* its **alphabet**: the characters it can consume. A match still in progress at the
  end of the buffer consists of alphabet characters only, so it starts inside the
  trailing run of them. For most rules that run is the last word, or shorter;
* its **reach**: how many characters past its start the engine can look at (consumed
  width plus lookaheads plus one for a boundary or a failed test). A start further
  back than that is decided whatever comes next.

The same walk rejects patterns that are unsafe on the request path: empty matches,
unbounded repetition nested in unbounded repetition (the classic catastrophic
backtracking shape), lookbehinds wider than the context the filter keeps.

``re._parser`` is CPython's own parser (``sre_parse`` before 3.11); anything the walk
does not recognise is treated conservatively (any character, unbounded reach).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]

UNBOUNDED = 1 << 30
MAX_PATTERN_LENGTH = 500
MAX_LOOKBEHIND = 64  # characters of already-sent text the stream filter keeps

_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}
_SINGLE = (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN)
_REPEATS = tuple(
    op
    for op in (
        sre.MAX_REPEAT,
        sre.MIN_REPEAT,
        getattr(sre, "POSSESSIVE_REPEAT", None),
    )
    if op is not None
)
_ATOMIC = getattr(sre, "ATOMIC_GROUP", None)
ANY_CHAR = r"(?s:.)"


class PatternError(ValueError):
    """A pattern that does not compile or is unsafe to run on every request."""


@dataclass(frozen=True)
class PatternInfo:
    min_width: int
    reach: int  # UNBOUNDED when repetition has no upper bound
    lookbehind: int
    alphabet: str | None  # a regex matching one consumable character; None: any character
    nested_unbounded: bool


def _char(code: int) -> str:
    return re.escape(chr(code))


def _class(items: list) -> str | None:
    negate = False
    parts: list[str] = []
    for op, arg in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            parts.append(_char(arg))
        elif op is sre.RANGE:
            parts.append(f"{_char(arg[0])}-{_char(arg[1])}")
        elif op is sre.CATEGORY and arg in _CATEGORIES:
            parts.append(_CATEGORIES[arg])
        else:
            return None
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


def _single(op, arg) -> str | None:
    """One character's matcher as regex text; ``None`` if it is not one we know."""
    if op is sre.LITERAL:
        return _char(arg)
    if op is sre.NOT_LITERAL:
        return f"[^{_char(arg)}]"
    if op is sre.ANY:
        return ANY_CHAR
    if op is sre.IN:
        return _class(arg)
    return None


class _Walk:
    def __init__(self) -> None:
        self.alphabet: set[str] = set()
        self.anything = False
        self.ignore_case = False
        self.lookbehind = 0
        self.lookahead = 0
        self.nested_unbounded = False

    def add(self, op, arg) -> None:
        piece = _single(op, arg)
        if piece is None or piece == ANY_CHAR:
            self.anything = True
        else:
            self.alphabet.add(piece)

    def seq(self, items, *, consume: bool, in_unbounded: bool) -> tuple[int, int]:
        """(min, max) consumed width of a sequence; records what it consumes."""
        lo = hi = 0
        for op, arg in items:
            a, b = self.node(op, arg, consume=consume, in_unbounded=in_unbounded)
            lo += a
            hi = min(UNBOUNDED, hi + b)
        return lo, hi

    def node(self, op, arg, *, consume: bool, in_unbounded: bool) -> tuple[int, int]:
        if op in _SINGLE:
            if consume:
                self.add(op, arg)
            return 1, 1
        if op is sre.AT:
            return 0, 0
        if op is sre.SUBPATTERN:
            _group, add_flags, _del_flags, sub = arg
            if add_flags & re.IGNORECASE:
                self.ignore_case = True
            return self.seq(sub, consume=consume, in_unbounded=in_unbounded)
        if _ATOMIC is not None and op is _ATOMIC:
            return self.seq(arg, consume=consume, in_unbounded=in_unbounded)
        if op is sre.BRANCH:
            widths = [self.seq(b, consume=consume, in_unbounded=in_unbounded) for b in arg[1]]
            return min(w[0] for w in widths), max(w[1] for w in widths)
        if op in _REPEATS:
            low, high, sub = arg
            unbounded = high is sre.MAXREPEAT or high >= sre.MAXREPEAT
            if unbounded and in_unbounded:
                self.nested_unbounded = True
            a, b = self.seq(sub, consume=consume, in_unbounded=in_unbounded or unbounded)
            top = UNBOUNDED if unbounded or b >= UNBOUNDED else min(UNBOUNDED, b * high)
            return min(UNBOUNDED, a * low), top
        if op in (sre.ASSERT, sre.ASSERT_NOT):
            direction, sub = arg
            if direction < 0:
                width = sub.getwidth()[1]
                self.lookbehind = max(self.lookbehind, min(width, UNBOUNDED))
                return 0, 0
            # A lookahead's last character is only tested, never stepped past, so it
            # need not be in the alphabet (``(?!\w)`` must not make every letter one).
            items = list(sub)
            last_single = bool(items) and items[-1][0] in _SINGLE
            head = items[:-1] if last_single else items
            _lo, head_hi = self.seq(head, consume=consume, in_unbounded=in_unbounded)
            width = min(UNBOUNDED, head_hi + (1 if last_single else 0))
            self.lookahead = min(UNBOUNDED, self.lookahead + width)
            return 0, 0
        if op is sre.GROUPREF:
            return 0, UNBOUNDED
        if op is sre.GROUPREF_EXISTS:
            _group, yes, no = arg
            a = self.seq(yes, consume=consume, in_unbounded=in_unbounded)
            b = self.seq(no, consume=consume, in_unbounded=in_unbounded) if no else (0, 0)
            return min(a[0], b[0]), max(a[1], b[1])
        # Unknown: assume the worst.
        self.anything = True
        return 0, UNBOUNDED


def _merge(pieces: set[str]) -> str:
    """One character class for the positive pieces (faster than an alternation)."""
    inside: list[str] = []
    others: list[str] = []
    for piece in sorted(pieces):
        if piece.startswith("[^"):
            others.append(piece)
        elif piece.startswith("["):
            inside.append(piece[1:-1])
        else:
            inside.append(piece)  # one escaped character
    if inside:
        others.insert(0, "[" + "".join(inside) + "]")
    return others[0] if len(others) == 1 else "(?:" + "|".join(others) + ")"


@functools.lru_cache(maxsize=4096)
def analyse(pattern: str, flags: int = 0) -> PatternInfo:
    """Facts about ``pattern`` (raises :class:`PatternError` if it does not compile)."""
    try:
        tree = sre_parse.parse(pattern, flags)
    except re.error as exc:
        raise PatternError(f"not a valid regular expression: {exc}") from exc
    walk = _Walk()
    if tree.state.flags & re.IGNORECASE:
        walk.ignore_case = True
    low, high = walk.seq(list(tree), consume=True, in_unbounded=False)
    reach = min(UNBOUNDED, high + walk.lookahead + 1) if high < UNBOUNDED else UNBOUNDED
    alphabet = None
    if not walk.anything and walk.alphabet:
        alphabet = _merge(walk.alphabet)
        if walk.ignore_case:
            alphabet = "(?i:" + alphabet + ")"
    return PatternInfo(
        min_width=low,
        reach=reach,
        lookbehind=walk.lookbehind,
        alphabet=alphabet,
        nested_unbounded=walk.nested_unbounded,
    )


def validate_pattern(pattern: str) -> PatternInfo:
    """Compile and vet a tenant's pattern; the message says what to change."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("the pattern is empty")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"the pattern is longer than {MAX_PATTERN_LENGTH} characters")
    info = analyse(pattern)
    try:
        re.compile(pattern)
    except re.error as exc:  # pragma: no cover - the parser above raises first
        raise PatternError(f"not a valid regular expression: {exc}") from exc
    if info.min_width == 0:
        raise PatternError("the pattern can match empty text; make at least one part required")
    if info.nested_unbounded:
        raise PatternError(
            "unbounded repetition inside unbounded repetition (like (a+)+) can take "
            "exponential time; bound the inner or outer repeat, e.g. {1,50}"
        )
    if info.lookbehind > MAX_LOOKBEHIND:
        raise PatternError(f"lookbehinds may look back at most {MAX_LOOKBEHIND} characters")
    return info
