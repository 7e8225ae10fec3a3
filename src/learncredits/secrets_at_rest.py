"""Encryption of the secrets we must keep readable: webhook signing secrets and stored answers.

API keys and passwords are stored as hashes because we only ever compare them. A webhook's
``whsec_`` secret is different: every delivery is signed with it, so it has to be readable,
and an idempotent replay has to hand back the first answer byte for byte, even when that
answer showed a new API key or webhook secret. Those values are therefore encrypted, so a
copy of the database (a backup, a replica, a leaked dump) does not carry them in clear.

The cipher is ``cryptography``'s Fernet (AES-128-CBC with HMAC-SHA256, authenticated, so a
tampered or wrongly keyed token is refused rather than decrypted into garbage). Its key is
derived from ``SECRET_KEY`` with HKDF-SHA256 and a purpose-specific ``info``, so it is
independent of every other use Django makes of ``SECRET_KEY`` (sessions, signing, reset
tokens). Encryption always uses ``SECRET_KEY``; decryption also tries every key in
``SECRET_KEY_FALLBACKS``, so rotating ``SECRET_KEY`` the Django way (move the old one into
the fallbacks) keeps every stored secret readable. ``reencrypt`` moves a token onto the
current key, after which the old key can be dropped.

``EncryptedCharField`` applies this to a model field, so code reading and writing the
attribute sees the plain value and cannot forget to encrypt it.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.lookups import Lookup

# Changing either value makes every stored token unreadable: they name this one purpose.
_SALT = b"learncredits"
_INFO = b"learncredits.secrets_at_rest.fernet.v1"

__all__ = [
    "EncryptedCharField",
    "UndecryptableSecret",
    "decrypt",
    "decrypt_text",
    "encrypt",
    "encrypt_text",
    "reencrypt",
]


class UndecryptableSecret(ValueError):
    """The token was not made with ``SECRET_KEY`` or any of ``SECRET_KEY_FALLBACKS`` (or it
    was altered). Raised instead of ``InvalidToken`` so callers need not import the cipher."""


def _fernet_key(secret_key: str | bytes) -> bytes:
    raw = secret_key.encode() if isinstance(secret_key, str) else secret_key
    derived = HKDF(algorithm=SHA256(), length=32, salt=_SALT, info=_INFO).derive(raw)
    return base64.urlsafe_b64encode(derived)


@lru_cache(maxsize=8)
def _cipher(secret_keys: tuple[str | bytes, ...]) -> MultiFernet:
    # Cached per key list: HKDF per call would be wasted work, and tests that override
    # SECRET_KEY get a new cipher because the key list is the cache key.
    return MultiFernet([Fernet(_fernet_key(key)) for key in secret_keys])


def _current() -> MultiFernet:
    return _cipher((settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS))


def encrypt(plaintext: bytes) -> bytes:
    """A Fernet token (URL-safe base64, ASCII) of ``plaintext`` under the current key."""
    return _current().encrypt(plaintext)


def decrypt(token: bytes | memoryview) -> bytes:
    """The plaintext of a token made with the current key or any fallback key (a memoryview
    is what PostgreSQL hands back for a binary column)."""
    try:
        return _current().decrypt(bytes(token))
    except InvalidToken:
        raise UndecryptableSecret(
            "cannot decrypt a stored secret: it was encrypted with a SECRET_KEY that is "
            "neither SECRET_KEY nor in SECRET_KEY_FALLBACKS"
        ) from None


def reencrypt(token: bytes | memoryview) -> bytes:
    """The same plaintext re-encrypted under the current key (for key rotation)."""
    try:
        return _current().rotate(bytes(token))
    except InvalidToken:
        raise UndecryptableSecret("cannot re-encrypt a stored secret: no key decrypts it") from None


def encrypt_text(plaintext: str) -> str:
    """``encrypt`` for text columns: the token is ASCII, so it fits a CharField."""
    return encrypt(plaintext.encode()).decode("ascii")


def decrypt_text(token: str) -> str:
    """``decrypt`` for text columns."""
    return decrypt(token.encode()).decode()


class EncryptedCharField(models.CharField):  # type: ignore[type-arg]
    """A text field kept encrypted in the database and plain in Python.

    ``max_length`` is the column's width, so it must fit the token: a Fernet token of n bytes
    is 4 * ceil((57 + 16 * ceil((n + 1) / 16)) / 3) characters, 164 for a 50-byte secret.
    Equality and other lookups are refused (each encryption differs, so they could never
    match); only ``isnull`` is allowed.
    """

    def from_db_value(
        self, value: str | None, expression: Any, connection: BaseDatabaseWrapper
    ) -> str | None:
        return None if value is None else decrypt_text(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return None if value is None else encrypt_text(value)

    def get_lookup(self, lookup_name: str) -> type[Lookup[Any]] | None:
        if lookup_name != "isnull":
            return None
        return super().get_lookup(lookup_name)
