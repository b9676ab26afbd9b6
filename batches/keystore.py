"""Encryption at rest for the API keys stored on connections.

Keys are encrypted with Fernet (the `cryptography` package: AES-128-CBC with an HMAC, so a
changed or corrupted value is detected rather than decrypted to garbage). The encryption key
comes from `BATCHWEB_ENCRYPTION_KEY`: a Fernet key, or any long passphrase (stretched with
SHA-256). Several comma-separated keys rotate: the first encrypts, all of them decrypt.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class KeystoreError(Exception):
    """Stored keys cannot be read or written; the message says which setting to fix."""


def _fernet(secret: str) -> Fernet:
    try:
        return Fernet(secret.encode())
    except ValueError:
        # Not a Fernet key: derive one, so a passphrase works as well.
        digest = hashlib.sha256(secret.encode()).digest()
        return Fernet(base64.urlsafe_b64encode(digest))


def _cipher() -> MultiFernet:
    secrets = [s.strip() for s in settings.BATCHWEB_ENCRYPTION_KEY.split(",") if s.strip()]
    if not secrets:
        raise KeystoreError(
            "BATCHWEB_ENCRYPTION_KEY is not set, so keys stored in the database cannot be "
            'encrypted or read. Set it (python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"), or give the connection the name of an '
            "environment variable that holds its key instead."
        )
    return MultiFernet([_fernet(s) for s in secrets])


def encrypt(plain: str) -> str:
    return _cipher().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _cipher().decrypt(token.encode()).decode()
    except InvalidToken:
        raise KeystoreError(
            "A stored key cannot be decrypted: BATCHWEB_ENCRYPTION_KEY is not the key it was "
            "saved with. Put the old key back (new,old keeps both while you re-save keys), or "
            "enter the connection's key again."
        ) from None


def can_decrypt(token: str) -> bool:
    try:
        decrypt(token)
    except KeystoreError:
        return False
    return True
