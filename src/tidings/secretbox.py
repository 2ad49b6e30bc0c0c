"""Signing secrets are encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    """Encrypts with the first key; decrypts with any, so keys can be rotated.

    Keys come from ``TIDINGS_ENCRYPTION_KEY`` (comma-separated Fernet keys) or, when
    unset, from ``encryption.key`` in the data directory, created on first use.
    """

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        self._primary = base64.urlsafe_b64decode(keys[0])

    @classmethod
    def from_config(cls, configured: str | None, data_dir: Path) -> SecretBox:
        if configured:
            return cls([k.strip() for k in configured.split(",") if k.strip()])
        return cls([load_or_create_key_file(data_dir / "encryption.key")])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def derive_key(self, purpose: str) -> bytes:
        """A key for ``purpose`` (e.g. signing portal sessions) derived from the primary
        key, so operators manage one secret; rotating it ends every session."""
        return hmac.new(self._primary, purpose.encode(), hashlib.sha256).digest()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise ValueError("cannot decrypt a stored secret with the configured keys") from exc


def load_or_create_key_file(path: Path) -> str:
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
