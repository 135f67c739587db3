"""Secret references: ``env:NAME``, ``file:PATH`` or a literal value."""

from __future__ import annotations

import os
from pathlib import Path


class SecretReferenceError(ValueError):
    pass


def is_reference(value: str) -> bool:
    return value.startswith(("env:", "file:"))


def resolve(value: str) -> str:
    """The secret a value stands for; a literal stands for itself."""
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise SecretReferenceError(f"environment variable {name} is not set")
        return os.environ[name]
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SecretReferenceError(f"cannot read secret file {path}: {exc.strerror}") from exc
    return value
