"""The ledger's Ed25519 keys: the signer of checkpoints and the keyrings that verify them.

Production loads the private key from HOLDFAST_LEDGER_SIGNING_KEY_FILE (PKCS#8 PEM, Ed25519);
without it, a dev key is made once under HOLDFAST_HOME/keys/ledger-ed25519.pem. A key's id is
derived from its public key (`domain.ledger.key_id_of`), so it cannot be mislabelled, and every
checkpoint names the key that signed it: rotating is pointing the setting at a new key file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from holdfast.domain.ledger import key_id_of

DEV_KEY = Path("keys") / "ledger-ed25519.pem"


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_pem(key: Ed25519PrivateKey | None = None) -> bytes:
    """`key` (a new one if None) as unencrypted PKCS#8 PEM: what a signing key file holds."""
    key = key or Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@dataclass(frozen=True)
class Ed25519Signer:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(raw_public(self.public_key))

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


class Ed25519Keyring:
    """Trusted public keys by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {key_id_of(raw_public(k)): k for k in keys}

    def knows(self, key_id: str) -> bool:
        return key_id in self.keys

    def verify(self, key_id: str, message: bytes, signature: bytes) -> bool:
        key = self.keys.get(key_id)
        if key is None:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def load_signer(path: Path) -> Ed25519Signer:
    """The signing key in `path` (PKCS#8 PEM, Ed25519)."""
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return Ed25519Signer(loaded)


def load_dev_signer(home: Path) -> Ed25519Signer:
    """Local development's key under HOLDFAST_HOME, made on first use."""
    path = home / DEV_KEY
    if not path.exists():
        _create_dev_key(path)
    return load_signer(path)


def _create_dev_key(path: Path) -> None:
    """Write a new key once: concurrent first users race on a hard link, one key wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = private_pem()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    try:
        os.link(tmp, path)  # fails if another process made the key first: theirs is kept
    except FileExistsError:
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key PEM (what GET /v1/ledger/public-key serves); a private key PEM also works."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key")
        return private.public_key()
    public = serialization.load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return public


def parse_public_pem(pem: str) -> Ed25519PublicKey:
    public = serialization.load_pem_public_key(pem.encode())
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return public
