"""Encryption of secrets at rest (provider credentials, signing secrets).

Keys come from GATEWAY_ENCRYPTION_KEYS (comma-separated Fernet keys, newest first;
older ones still decrypt, which is how rotation works) or, in the embedded setup,
from a key file generated on first run.
"""

from __future__ import annotations

import os
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class DecryptionError(Exception):
    pass


def _file_key() -> bytes:
    path = settings.GATEWAY_ENCRYPTION_KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(Fernet.generate_key())
    return path.read_bytes().strip()


@cache
def _fernet() -> MultiFernet:
    keys = [k.strip().encode() for k in settings.GATEWAY_ENCRYPTION_KEYS if k.strip()]
    if not keys:
        keys = [_file_key()]
    return MultiFernet([Fernet(k) for k in keys])


def reset_keys() -> None:
    """Forget the loaded keys (after the settings changed)."""
    _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("cannot decrypt: no configured key matches") from exc


def reencrypt(token: str) -> str:
    """Re-encrypt under the newest key."""
    return _fernet().rotate(token.encode()).decode()
