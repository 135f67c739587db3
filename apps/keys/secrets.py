"""Key material: generation and hashing. Keys are 256-bit random, so one SHA-256 suffices."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "gw-"
PREFIX_LENGTH = 11  # "gw-" and 8 characters: enough to recognise a key, useless to guess it


def generate_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:PREFIX_LENGTH]
