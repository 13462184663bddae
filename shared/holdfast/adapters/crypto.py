"""Personal data at rest: AES-256-GCM with key ids, so keys can be rotated.

Account and transfer `metadata` (names, addresses, references) is sealed before it reaches
the database and opened after it leaves it. A sealed value is

    b"\\x01" | len(key_id) (1 byte) | key_id | nonce (12 bytes) | ciphertext + tag

and the row's id is the associated data, so a value moved to another row does not open.
Keys come from a JSON file (`HOLDFAST_METADATA_KEYS_FILE`):

    {"active": "2026-11", "keys": {"2026-11": "<base64 of 32 bytes>", "2026-05": "..."}}

New values use the active key; older keys stay to open old values until `holdfast keys
rotate` has re-sealed every row. A cipher made from a file reads the file again when it meets
a value sealed with a key it does not know and the file changed since it was read: a process
started before `holdfast keys add` (or before its Secret was updated in place) opens the rows
that the rotation re-sealed, and seals new ones with the new active key from then on. Ledger
entries hold no personal data, so audits and exports never need these keys.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from holdfast.domain.errors import InvariantViolation

VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32


@dataclass(frozen=True)
class _KeySet:
    """One reading of the key file: replaced whole, so a reader never sees half of two."""

    ciphers: dict[str, AESGCM]
    fingerprint_keys: dict[str, bytes]
    active: str

    @classmethod
    def of(cls, keys: dict[str, bytes], active: str) -> _KeySet:
        if active not in keys:
            raise ValueError(f"the active key {active!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) != KEY_BYTES or not 1 <= len(key_id.encode()) <= 255:
                raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes with a short id")
        return cls(
            ciphers={key_id: AESGCM(key) for key_id, key in keys.items()},
            fingerprint_keys={
                key_id: hmac.new(key, b"holdfast metadata fingerprint", "sha256").digest()
                for key_id, key in keys.items()
            },
            active=active,
        )


class MetadataCipher:
    def __init__(
        self,
        keys: dict[str, bytes],
        active: str,
        source: Path | None = None,
        source_stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self._keys = _KeySet.of(keys, active)
        self.source = source
        self._source_stamp = source_stamp  # the file as it was before it was read
        self._reload_lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path) -> MetadataCipher:
        # Stamp first, then read: a file changed in between is read again when needed.
        stamp = _stamp(path)
        return cls(*read_key_file(path), source=path, source_stamp=stamp)

    @classmethod
    def dev(cls, home: Path) -> MetadataCipher:
        """The local key file under HOLDFAST_HOME, made on first use (like the dev issuer)."""
        path = dev_key_file(home)
        if not path.exists():
            write_key_file(path, {"dev-1": AESGCM.generate_key(bit_length=256)}, "dev-1")
        return cls.from_file(path)

    @property
    def active(self) -> str:
        return self._keys.active

    def knows(self, key_id: str) -> bool:
        return key_id in self._keys.ciphers

    def _reload(self) -> bool:
        """Read the key file again if it changed since it was read; True if it did."""
        if self.source is None:
            return False
        with self._reload_lock:
            stamp = _stamp(self.source)
            if stamp == self._source_stamp:
                return False
            self._keys, self._source_stamp = _KeySet.of(*read_key_file(self.source)), stamp
        return True

    def seal(self, value: dict[str, Any], *, row_id: str) -> bytes:
        keys = self._keys
        key_id = keys.active.encode()
        nonce = os.urandom(NONCE_BYTES)
        plaintext = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
        sealed = keys.ciphers[keys.active].encrypt(nonce, plaintext, row_id.encode())
        return bytes([VERSION, len(key_id)]) + key_id + nonce + sealed

    def fingerprint(self, value: dict[str, Any], *, row_id: str, key_id: str | None = None) -> str:
        """A keyed digest of `value` (HMAC-SHA256 under a subkey of a metadata key): what the
        idempotency check keeps, so that the database alone cannot confirm a guessed name."""
        keys = self._keys
        key_id = key_id or keys.active
        if key_id not in keys.fingerprint_keys:  # removed from the file since it was looked up
            raise InvariantViolation(f"no metadata key {key_id!r} to fingerprint with")
        canonical = json.dumps(value, separators=(",", ":"), sort_keys=True)
        mac = hmac.new(keys.fingerprint_keys[key_id], f"{row_id}:{canonical}".encode(), "sha256")
        return f"hmac-sha256:{key_id}:{mac.hexdigest()}"

    def fingerprint_key_id(self, fingerprint: object) -> str | None:
        """The key a stored fingerprint was made with, if this cipher still has it."""
        if isinstance(fingerprint, str) and fingerprint.startswith("hmac-sha256:"):
            key_id = fingerprint.split(":")[1]
            return key_id if key_id in self._keys.fingerprint_keys else None
        return None

    def open(self, blob: bytes, *, row_id: str) -> dict[str, Any]:
        key_id = key_id_of(blob)
        cipher = self._keys.ciphers.get(key_id)  # one reading of the key set per call
        if cipher is None and self._reload():
            cipher = self._keys.ciphers.get(key_id)
        if cipher is None:
            raise InvariantViolation(f"metadata sealed with unknown key {key_id!r}")
        start = 2 + len(key_id.encode())
        nonce, sealed = blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
        value: dict[str, Any] = json.loads(cipher.decrypt(nonce, sealed, row_id.encode()))
        return value


def _stamp(path: Path) -> tuple[int, int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size, status.st_ino


def dev_key_file(home: Path) -> Path:
    return home / "keys" / "metadata-keys.json"


def key_id_of(blob: bytes) -> str:
    if len(blob) < 2 or blob[0] != VERSION:
        raise InvariantViolation("not a sealed value")
    return blob[2 : 2 + blob[1]].decode()


def read_key_file(path: Path) -> tuple[dict[str, bytes], str]:
    document = json.loads(path.read_text())
    keys = {k: base64.b64decode(v) for k, v in document["keys"].items()}
    return keys, document["active"]


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
