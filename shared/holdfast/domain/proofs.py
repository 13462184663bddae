"""Proofs about single entries and checkpoints, checked without the whole export. Pure.

An inclusion proof (`GET /v1/ledger/entries/{seq}/proof`) is

    {"entry": {...the entry record...}, "checkpoint": {...the signed checkpoint record...},
     "leaf_index": seq - first_seq, "audit_path": [hex, ...]}

and holds when the checkpoint is well formed, its digest matches its fields, a trusted key
signed it, the entry is in canonical form, its seq is the checkpoint's first_seq + leaf_index,
and the RFC 6962 audit path leads from the entry's leaf hash to the signed `entries_root`.
Every byte of the answer is thereby covered: the entry by its leaf hash, the index and path by
the root, the checkpoint by its digest and signature.

An extension (`check_extension`) shows that a later checkpoint M extends a checkpoint N whose
digest an auditor already holds: the signed records after N, each linking to the one before
by `previous_digest`, the first to the held digest. Because every digest covers the previous
one, M's signature then vouches that the history up to N is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from holdfast import limits
from holdfast.domain import merkle
from holdfast.domain.ledger import (
    GENESIS_DIGEST,
    Checkpoint,
    Keyring,
    LedgerEntry,
    TamperDetected,
    check_signed,
    checked_checkpoint,
    checked_entry,
    leaf_hash,
)

PROOF_FIELDS = ("entry", "checkpoint", "leaf_index", "audit_path")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


def inclusion_proof(
    entry: LedgerEntry, checkpoint: Checkpoint, leaves: Sequence[bytes]
) -> dict[str, Any]:
    """The proof of `entry` in `checkpoint`, whose leaf hashes in seq order are `leaves`."""
    index = entry.seq - checkpoint.first_seq
    return {
        "entry": entry.record(),
        "checkpoint": checkpoint.record(),
        "leaf_index": index,
        "audit_path": [sibling.hex() for sibling in merkle.audit_path(leaves, index)],
    }


@dataclass(frozen=True, slots=True)
class Proven:
    entry: dict[str, Any]
    checkpoint: dict[str, Any]
    leaf_index: int

    def line(self) -> str:
        e, cp = self.entry, self.checkpoint
        return (
            f"OK: entry seq {e['seq']} (transfer {e['transfer_id']} leg {e['leg']}, "
            f"{e['direction']} {e['amount']} {e['currency']} on account {e['account_id']}, "
            f"posted {e['posted_at']}) is leaf {self.leaf_index} of checkpoint {cp['number']} "
            f"(seqs {cp['first_seq']}..{cp['last_seq']}), signed by key {cp['key_id']}; "
            f"checkpoint digest {cp['digest']}"
        )


def check_inclusion(record: Any, keyring: Keyring) -> Proven:
    """Check an inclusion proof; TamperDetected names the part that does not hold."""
    if not isinstance(record, dict):
        raise TamperDetected("the proof", "not a JSON object")
    keys = set(record)
    if keys != set(PROOF_FIELDS):
        missing, extra = sorted(set(PROOF_FIELDS) - keys), sorted(keys - set(PROOF_FIELDS))
        raise TamperDetected("the proof", f"fields wrong: missing {missing}, extra {extra}")
    cp = checked_checkpoint("checkpoint", record["checkpoint"])
    check_signed("checkpoint", cp, keyring)
    entry = checked_entry("entry", record["entry"])
    index = record["leaf_index"]
    count = cp["entry_count"]
    if type(index) is not int or not 0 <= index < count:
        raise TamperDetected(
            "leaf_index", f"must be an integer in 0..{count - 1} (checkpoint size): {index!r}"
        )
    if entry["seq"] != cp["first_seq"] + index:
        raise TamperDetected(
            "leaf_index",
            f"entry seq {entry['seq']} cannot be leaf {index} of checkpoint {cp['number']}, "
            f"which starts at seq {cp['first_seq']}",
        )
    path = _path(record["audit_path"])
    try:
        reached = merkle.root_from_path(leaf_hash(entry), index, count, path)
    except ValueError as error:
        raise TamperDetected("audit_path", f"{error} (leaf {index} of {count})") from error
    if reached.hex() != cp["entries_root"]:
        raise TamperDetected(
            "the proof",
            f"entry seq {entry['seq']} and its audit path do not lead to checkpoint "
            f"{cp['number']}'s signed entries_root: the entry, the leaf index or the path "
            "was changed",
        )
    return Proven(entry, cp, index)


def _path(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > limits.ledger_audit_path_hashes_max:
        raise TamperDetected(
            "audit_path", f"must be a list of at most {limits.ledger_audit_path_hashes_max} hashes"
        )
    for position, sibling in enumerate(value):
        if not isinstance(sibling, str) or not _HEX64.match(sibling):
            raise TamperDetected(
                "audit_path", f"hash {position} is not 64 lowercase hex digits: {sibling!r}"
            )
    return [bytes.fromhex(sibling) for sibling in value]


def check_extension(
    held_digest: str, records: Sequence[Mapping[str, Any]], keyring: Keyring
) -> dict[str, Any]:
    """The last of `records` (signed checkpoint records in number order) if they extend the
    checkpoint whose digest is `held_digest`: the first record either is that checkpoint or
    links to it, and each next one links to the one before. TamperDetected otherwise."""
    if not records:
        raise TamperDetected(
            "checkpoint records", "none given (after=N-1 includes the held checkpoint N itself)"
        )
    where = "checkpoint record 1"
    previous = checked_checkpoint(where, records[0])
    check_signed(where, previous, keyring)
    if held_digest not in (previous["previous_digest"], previous["digest"]):
        raise TamperDetected(
            where,
            f"checkpoint {previous['number']} neither has the held digest {held_digest} "
            "nor follows the checkpoint that has it",
        )
    if previous["number"] == 1 and (
        previous["previous_digest"] != GENESIS_DIGEST or previous["first_seq"] != 1
    ):
        raise TamperDetected(where, "checkpoint 1 must start at seq 1 from the genesis digest")
    for position, record in enumerate(records[1:], 2):
        where = f"checkpoint record {position}"
        cp = checked_checkpoint(where, record)
        check_signed(where, cp, keyring)
        _check_follows(where, cp, previous)
        previous = cp
    return previous


def _check_follows(where: str, cp: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
    number = cp["number"]
    if number != previous["number"] + 1:
        raise TamperDetected(
            where, f"checkpoint {number} does not follow checkpoint {previous['number']}"
        )
    if cp["previous_digest"] != previous["digest"]:
        raise TamperDetected(
            where,
            f"checkpoint {number} does not link to checkpoint {previous['number']}: "
            f"previous_digest {cp['previous_digest']} is not its digest {previous['digest']}",
        )
    if cp["first_seq"] != previous["last_seq"] + 1:
        raise TamperDetected(
            where,
            f"checkpoint {number} starts at seq {cp['first_seq']}, not right after "
            f"checkpoint {previous['number']}'s last seq {previous['last_seq']}",
        )
