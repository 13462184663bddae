"""Personal data at rest: AES-256-GCM with key ids, so keys can be rotated.

Account and transfer `metadata` (names, addresses, references) is sealed before it reaches
the database and opened after it leaves it. A sealed value is

    b"\\x01" | len(key_id) (1 byte) | key_id | nonce (12 bytes) | ciphertext + tag

and the row's id is the associated data, so a value moved to another row does not open.
Keys come from a JSON file (`HOLDFAST_METADATA_KEYS_FILE`):

    {"active": "2026-11", "keys": {"2026-11": "<base64 of 32 bytes>", "2026-05": "..."}}

New values use the active key; older keys stay to open old values until `holdfast keys
rotate` has re-sealed every row. Ledger entries hold no personal data, so audits and
exports never need these keys.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from holdfast.domain.errors import InvariantViolation

VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32


class MetadataCipher:
    def __init__(self, keys: dict[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError(f"the active key {active!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES or not 1 <= len(key_id.encode()) <= 255:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes with a short id")
        self.keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._fingerprint_keys = {
            key_id: hmac.new(key, b"holdfast metadata fingerprint", "sha256").digest()
            for key_id, key in keys.items()
        }
        self.active = active

    @classmethod
    def from_file(cls, path: Path) -> MetadataCipher:
        document = json.loads(path.read_text())
        keys = {k: base64.b64decode(v) for k, v in document["keys"].items()}
        return cls(keys, document["active"])

    @classmethod
    def dev(cls, home: Path) -> MetadataCipher:
        """The local key file under HOLDFAST_HOME, made on first use (like the dev issuer)."""
        path = home / "keys" / "metadata-keys.json"
        if not path.exists():
            write_key_file(path, {"dev-1": AESGCM.generate_key(bit_length=256)}, "dev-1")
        return cls.from_file(path)

    def seal(self, value: dict[str, Any], *, row_id: str) -> bytes:
        key_id = self.active.encode()
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        sealed = self.keys[self.active].encrypt(nonce, plaintext, row_id.encode())
        return bytes([VERSION, len(key_id)]) + key_id + nonce + sealed

    def fingerprint(self, value: dict[str, Any], *, row_id: str, key_id: str | None = None) -> str:
        """A keyed digest of `value` (HMAC-SHA256 under a subkey of a metadata key): what the
        idempotency check keeps, so that the database alone cannot confirm a guessed name."""
        key_id = key_id or self.active
        canonical = json.dumps(value, separators=(",", ":"), sort_keys=True)
        mac = hmac.new(self._fingerprint_keys[key_id], f"{row_id}:{canonical}".encode(), "sha256")
        return f"hmac-sha256:{key_id}:{mac.hexdigest()}"

    def fingerprint_key_id(self, fingerprint: object) -> str | None:
        """The key a stored fingerprint was made with, if this cipher still has it."""
        if isinstance(fingerprint, str) and fingerprint.startswith("hmac-sha256:"):
            key_id = fingerprint.split(":")[1]
            return key_id if key_id in self._fingerprint_keys else None
        return None

    def open(self, blob: bytes, *, row_id: str) -> dict[str, Any]:
        key_id = key_id_of(blob)
        if key_id not in self.keys:
            raise InvariantViolation(f"metadata sealed with unknown key {key_id!r}")
        start = 2 + len(key_id.encode())
        nonce, sealed = blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
        value: dict[str, Any] = json.loads(
            self.keys[key_id].decrypt(nonce, sealed, row_id.encode())
        )
        return value


def key_id_of(blob: bytes) -> str:
    if len(blob) < 2 or blob[0] != VERSION:
        raise InvariantViolation("not a sealed value")
    return blob[2 : 2 + blob[1]].decode()


def write_key_file(path: Path, keys: dict[str, bytes], active: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "active": active,
        "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)


# Only for code paths that construct a Database without configuration (tests, tools): a
# fixed, public key. Runtime.from_settings always passes the configured or dev key file.
INSECURE_DEFAULT = MetadataCipher({"insecure-default": b"\x00" * KEY_BYTES}, "insecure-default")
