"""Token estimates where no tokenizer is at hand: about four characters a token."""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\w{1,4}|[^\w\s]")


def split_tokens(text: str) -> list[str]:
    """Pieces of ``text`` roughly the size of BPE tokens, joined they give the text back."""
    pieces: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        pieces.append(text[pos : match.end()])
        pos = match.end()
    if pos < len(text):
        if pieces:
            pieces[-1] += text[pos:]
        else:
            pieces.append(text[pos:])
    return pieces


def estimate_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def message_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    # OpenAI's chat format adds about 3 tokens of framing per message and 3 for the reply.
    return 3 + sum(4 + estimate_tokens(message_text(m.get("content"))) for m in messages)
