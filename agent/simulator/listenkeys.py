"""Binance listenKey lifecycle (pure logic): one active key per account, 60-minute validity."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


class ListenKeyBook:
    """The account's listenKey: created or extended by POST, kept alive by PUT, closed by DELETE."""

    def __init__(self, validity_ms: int) -> None:
        self.validity_ms = validity_ms
        self.key: str | None = None
        self.expires_at_ms = 0

    def active(self, now_ms: int) -> str | None:
        """The key if it is still valid at ``now_ms``."""
        if self.key is not None and now_ms < self.expires_at_ms:
            return self.key
        return None

    def create_or_extend(self, now_ms: int) -> str:
        """POST: return the active key extended by the validity period, or a new key."""
        key = self.active(now_ms)
        if key is None:
            key = "".join(secrets.choice(_ALPHABET) for _ in range(64))
            self.key = key
        self.expires_at_ms = now_ms + self.validity_ms
        return key

    def keepalive(self, now_ms: int, key: str | None = None) -> str | None:
        """PUT: extend the active key; None (the venue's -1125) when there is none or it differs."""
        active = self.active(now_ms)
        if active is None or (key is not None and key != active):
            return None
        self.expires_at_ms = now_ms + self.validity_ms
        return active

    def close(self, now_ms: int, key: str | None = None) -> bool:
        """DELETE: invalidate the key; False when there was no matching active key."""
        active = self.active(now_ms)
        if active is None or (key is not None and key != active):
            return False
        self.key = None
        self.expires_at_ms = 0
        return True

    def expire(self) -> str | None:
        """Expire the key now (fault injection); returns the key that expired."""
        key, self.key, self.expires_at_ms = self.key, None, 0
        return key
