"""The ledger's proof: ledger order, canonical encodings, Merkle roots, signed checkpoints, and
the verifier that checks an export (or the database) against them. Pure: no I/O, no keys.

Sealing gives each new entry the next sequence number `seq` and closes the run into checkpoint
N + 1 (docs/ledger.md has the whole design). Format v1, all hashes SHA-256, hex in JSON:

    leaf(entry)     = H(0x00 || JCS(entry record))                      RFC 6962 leaf
    node(l, r)      = H(0x01 || l || r)                                 RFC 6962 node
    entries_root    = RFC 6962 Merkle tree hash of the checkpoint's leaves, in seq order
    digest          = H(0x02 || JCS({number, first_seq, last_seq, entry_count,
                                     entries_root, previous_digest}))
    signature       = Ed25519(SIGNING_CONTEXT || JCS(checkpoint record without "signature"))

JCS is RFC 8785 (sorted keys, no whitespace). For the values used here (integers below 2**53,
ASCII strings) it is exactly `json.dumps(..., sort_keys=True, separators=(",", ":"))`.

Invariants kept by `seal` and checked by `Verifier`:
- seqs run from 1 without a gap; checkpoint N + 1 starts at N's last_seq + 1 and carries N's
  digest (checkpoint 1 carries GENESIS_DIGEST);
- each transfer's entries are all in one checkpoint, and each leg is exactly one debit and
  one credit of the same amount and currency on two different accounts;
- the digest commits to the checkpoint's range and root and, through previous_digest, to every
  checkpoint before it; the signature covers every field of the record.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from holdfast import limits
from holdfast.domain import ijson, merkle
from holdfast.domain.accounts import Direction
from holdfast.domain.errors import HoldfastError, InvariantViolation, require
from holdfast.domain.transfers import Entry

FORMAT = "holdfast-ledger-export/1"
GENESIS_DIGEST = "0" * 64
SIGNING_CONTEXT = b"holdfast-ledger-checkpoint-v1\n"
ENTRY_FIELDS = (
    "seq",
    "transfer_id",
    "leg",
    "direction",
    "account_id",
    "amount",
    "currency",
    "posted_at",
)
DIGEST_FIELDS = (
    "number",
    "first_seq",
    "last_seq",
    "entry_count",
    "entries_root",
    "previous_digest",
)
SIGNED_FIELDS = (*DIGEST_FIELDS, "digest", "key_id", "created_at")
CHECKPOINT_FIELDS = (*SIGNED_FIELDS, "signature")

# ASCII digits only (`\d` would take any Unicode digit) and `\Z` (`$` allows a final newline,
# which bytes.fromhex would then ignore): one spelling for each value.
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_LOWER_HEX = re.compile(r"[0-9a-f]*")
_HEX128 = re.compile(r"^[0-9a-f]{128}\Z")
_KEY_ID = re.compile(r"^[0-9a-f]{32}\Z")
_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z")
_CURRENCY = re.compile(r"^[A-Z]{3}\Z")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# An entry line exactly as the export writes it: no whitespace, members in the export's order,
# integers without sign or leading zero, strings that need no escape. Such a line holds the
# record json.loads would give, with no duplicate member and every form `_entry_fields`
# demands; ranges (seq, leg, amount, the date) are checked after. Other lines: ijson.loads.
_UUID_BYTES = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_ENTRY_LINE = re.compile(
    rb'\{"type":"entry","seq":(0|[1-9][0-9]{0,18}),"transfer_id":"(' + _UUID_BYTES + rb')",'
    rb'"leg":(0|[1-9][0-9]{0,18}),"direction":"(debit|credit)","account_id":"('
    + _UUID_BYTES
    + rb')","amount":(0|[1-9][0-9]{0,18}),"currency":"([A-Z]{3})",'
    rb'"posted_at":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)"\}\r?\n?'
)


# An entry's leaf (0x00 || JCS of its fields, keys sorted) from an `_ENTRY_LINE` line's values.
_LEAF_OF_LINE = (
    b'\x00{"account_id":"%b","amount":%b,"currency":"%b","direction":"%b","leg":%b,'
    b'"posted_at":"%b","seq":%b,"transfer_id":"%b"}'
)


class TamperDetected(HoldfastError):
    """Verification failed: `where` names the first record that is wrong (a line, a seq)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


class Signer(Protocol):
    """Signs checkpoint messages with one key (adapters.signing has the Ed25519 one)."""

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class Keyring(Protocol):
    """The public keys a verifier trusts, by key id."""

    def knows(self, key_id: str) -> bool: ...

    def verify(self, key_id: str, message: bytes, signature: bytes) -> bool: ...


# -- encodings ----------------------------------------------------------------------------


def canonical(value: Mapping[str, Any]) -> bytes:
    """RFC 8785 (JCS) for objects of integers and ASCII strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def format_time(value: datetime) -> str:
    """The one rendering of a time in every record: RFC 3339, UTC, microseconds, `Z`."""
    require(value.tzinfo is not None, "ledger times are timezone-aware")
    # isoformat is strftime("%Y-%m-%dT%H:%M:%S.%f") for years 1000..9999, at a fifth the cost.
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    if not _TIME.fullmatch(text):
        raise ValueError(f"{text!r} is not a time in the form 2026-01-31T12:00:00.000000Z")
    # The form is fixed by the pattern; fromisoformat checks the ranges (10x strptime's speed).
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def leaf_hash(record: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(b"\x00" + canonical({k: record[k] for k in ENTRY_FIELDS})).digest()


def _checked_leaf_hash(entry: Mapping[str, Any]) -> bytes:
    """`leaf_hash` of an entry whose fields passed `_entry_fields`: integers, and strings of
    hex digits, hyphens, letters and time punctuation, none of which JSON escapes, so their
    JCS is written out directly in sorted key order (the verifier's hot path; a unit test
    compares it with `leaf_hash`)."""
    text = (
        f'{{"account_id":"{entry["account_id"]}","amount":{entry["amount"]},'
        f'"currency":"{entry["currency"]}","direction":"{entry["direction"]}",'
        f'"leg":{entry["leg"]},"posted_at":"{entry["posted_at"]}","seq":{entry["seq"]},'
        f'"transfer_id":"{entry["transfer_id"]}"}}'
    )
    return hashlib.sha256(b"\x00" + text.encode()).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash of the leaf hashes (`domain.merkle`)."""
    return merkle.root(leaves)


def checkpoint_digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(b"\x02" + canonical({k: record[k] for k in DIGEST_FIELDS})).hexdigest()


def signing_message(record: Mapping[str, Any]) -> bytes:
    return SIGNING_CONTEXT + canonical({k: record[k] for k in SIGNED_FIELDS})


# -- entries and checkpoints -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """An entry with its place in the ledger order."""

    seq: int
    transfer_id: UUID
    leg: int
    direction: Direction
    account_id: UUID
    amount: int
    currency: str
    posted_at: datetime

    @classmethod
    def of(cls, entry: Entry, seq: int) -> LedgerEntry:
        return cls(
            seq=seq,
            transfer_id=entry.transfer_id,
            leg=entry.leg,
            direction=entry.direction,
            account_id=entry.account_id,
            amount=entry.amount,
            currency=entry.currency,
            posted_at=entry.posted_at,
        )

    def record(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "transfer_id": str(self.transfer_id),
            "leg": self.leg,
            "direction": str(self.direction),
            "account_id": str(self.account_id),
            "amount": self.amount,
            "currency": self.currency,
            "posted_at": format_time(self.posted_at),
        }

    def leaf(self) -> bytes:
        return leaf_hash(self.record())


@dataclass(frozen=True, slots=True)
class Checkpoint:
    number: int
    first_seq: int
    last_seq: int
    entry_count: int
    entries_root: str
    previous_digest: str
    digest: str
    key_id: str
    created_at: datetime
    signature: str

    def record(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "entry_count": self.entry_count,
            "entries_root": self.entries_root,
            "previous_digest": self.previous_digest,
            "digest": self.digest,
            "key_id": self.key_id,
            "created_at": format_time(self.created_at),
            "signature": self.signature,
        }


@dataclass(frozen=True, slots=True)
class Sealed:
    checkpoint: Checkpoint
    entries: list[LedgerEntry]
    leaves: list[bytes]


def entry_order(entry: Entry) -> tuple[datetime, UUID, int, bool]:
    """Within a batch: by posting time, then transfer, leg, and debit before credit."""
    return (entry.posted_at, entry.transfer_id, entry.leg, entry.direction is Direction.CREDIT)


def seal(
    previous: Checkpoint | None,
    entries: Iterable[Entry],
    *,
    created_at: datetime,
    signer: Signer,
) -> Sealed:
    """Order a batch of whole transfers, number it after `previous`, and sign the checkpoint."""
    ordered = sorted(entries, key=entry_order)
    require(
        1 <= len(ordered) <= limits.ledger_checkpoint_entries_max,
        f"a checkpoint holds 1 to {limits.ledger_checkpoint_entries_max} entries",
    )
    first_seq = previous.last_seq + 1 if previous else 1
    sealed = [LedgerEntry.of(entry, first_seq + i) for i, entry in enumerate(ordered)]
    records = [entry.record() for entry in sealed]
    legs = Legs()
    for record in records:
        problem = legs.add(record, f"seq {record['seq']}")
        require(problem is None, f"sealing: {problem}")
    unbalanced = legs.problem()
    require(unbalanced is None, f"sealing: {unbalanced and unbalanced[1]}")
    leaves = [leaf_hash(record) for record in records]
    checkpoint: dict[str, Any] = {
        "number": previous.number + 1 if previous else 1,
        "first_seq": first_seq,
        "last_seq": first_seq + len(sealed) - 1,
        "entry_count": len(sealed),
        "entries_root": merkle_root(leaves).hex(),
        "previous_digest": previous.digest if previous else GENESIS_DIGEST,
        "key_id": signer.key_id,
        "created_at": format_time(created_at),
    }
    checkpoint["digest"] = checkpoint_digest(checkpoint)
    signed = Checkpoint(
        **{**checkpoint, "created_at": created_at},
        signature=signer.sign(signing_message(checkpoint)).hex(),
    )
    return Sealed(signed, sealed, leaves)


# -- double entry ---------------------------------------------------------------------------


@dataclass
class Legs:
    """The legs of the transfers of one checkpoint, to check double entry when it closes."""

    # transfer -> leg -> direction -> (account, amount, currency, where)
    legs: dict[str, dict[int, dict[str, tuple[str, int, str, str]]]] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any], where: str) -> str | None:
        """Record one entry; say what is wrong if it repeats a (transfer, leg, direction)."""
        return self.add_fields(
            record["transfer_id"],
            record["leg"],
            record["direction"],
            (record["account_id"], record["amount"], record["currency"], where),
        )

    def add_fields(
        self, transfer_id: str, leg: int, direction: str, side: tuple[str, int, str, str]
    ) -> str | None:
        """`add` of an entry's fields: side is (account, amount, currency, where)."""
        sides = self.legs.setdefault(transfer_id, {}).setdefault(leg, {})
        if direction in sides:
            return (
                f"transfer {transfer_id} has a second {direction} entry "
                f"for leg {leg} (first at {sides[direction][3]})"
            )
        sides[direction] = side
        return None

    def problem(self) -> tuple[str, str] | None:
        """The first transfer that does not balance leg by leg: (where, what)."""
        for transfer_id, legs in self.legs.items():
            if sorted(legs) != list(range(len(legs))):
                where = next(iter(next(iter(legs.values())).values()))[3]
                return where, f"transfer {transfer_id} has legs {sorted(legs)}, not 0..n-1"
            # Each leg balances in its own currency; the legs of one transfer may use several
            # (a foreign-exchange payment), and nothing nets one currency against another.
            for leg, sides in sorted(legs.items()):
                debit, credit = sides.get("debit"), sides.get("credit")
                if debit is None or credit is None:
                    only = debit or credit
                    require(only is not None, "a leg has at least one entry")
                    return (
                        only[3] if only else "?",
                        f"transfer {transfer_id} leg {leg} has no "
                        f"{'credit' if credit is None else 'debit'} entry: it does not balance",
                    )
                if debit[1] != credit[1] or debit[2] != credit[2]:
                    return (
                        debit[3],
                        f"transfer {transfer_id} leg {leg} does not balance: debit {debit[1]} "
                        f"{debit[2]} ({debit[3]}) against credit {credit[1]} {credit[2]} "
                        f"({credit[3]})",
                    )
                if debit[0] == credit[0]:
                    return debit[
                        3
                    ], f"transfer {transfer_id} leg {leg} debits and credits one account"
        return None

    def clear(self) -> list[str]:
        done = list(self.legs)
        self.legs = {}
        return done


# -- verification -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Summary:
    checkpoints: int
    entries: int
    transfers: int
    first_checkpoint: int | None
    last_checkpoint: int | None
    last_seq: int
    last_digest: str
    key_ids: tuple[str, ...]
    extends: int | None = None  # the held checkpoint the export was shown to extend
    pinned: bool = False  # the last digest was checked against an expected one

    def line(self) -> str:
        if self.last_checkpoint is None:
            return "OK: the export holds no checkpoint and no entry"
        pins = ""
        if self.extends is not None:
            pins += f"; it extends the held checkpoint {self.extends}"
        if self.pinned:
            pins += "; it ends on the expected digest"
        return (
            f"OK: {self.entries} entries of {self.transfers} transfers in checkpoints "
            f"{self.first_checkpoint}..{self.last_checkpoint} (seqs up to {self.last_seq}): "
            f"every entry sealed and unchanged, every checkpoint signed "
            f"(key {', '.join(self.key_ids)}) and chained, every transfer balanced; "
            f"last digest {self.last_digest}{pins}"
        )


@dataclass
class _Block:
    """The checkpoint whose entries are being read, with its authenticated leaves."""

    checkpoint: dict[str, Any]
    where: str
    leaves: list[bytes]
    read: int = 0


class Verifier:
    """Checks export records in order and raises TamperDetected at the first wrong one.

    Records: one `export` header, then per checkpoint its `checkpoint` record (with the leaf
    hashes of its entries) followed by its `entry` records in seq order, then one `end`. The
    leaves are authenticated against the signed entries_root before any entry is read, so a
    changed, dropped, inserted or reordered entry is named at its own record.
    """

    def __init__(
        self,
        keyring: Keyring,
        *,
        extends: str | None = None,
        expect_digest: str | None = None,
    ) -> None:
        """`extends`: a checkpoint digest the auditor already holds; the export must contain
        that checkpoint or start right after it. `expect_digest`: the digest the export's last
        checkpoint must have (obtained independently), so a shortened export is refused."""
        self.keyring = keyring
        self.extends = extends
        self.extended_from: int | None = None
        self.expect_digest = expect_digest
        self.header: dict[str, Any] | None = None
        self.previous: dict[str, Any] | None = None
        self.block: _Block | None = None
        self.legs = Legs()
        self.transfers: set[str] = set()
        self.entries = 0
        self.checkpoints = 0
        self.first_checkpoint: int | None = None
        self.key_ids: set[str] = set()
        self.ended = False
        self._valid_posted = b""  # the last posted_at (bytes of a fast line) found valid

    def feed_line(self, where: str, raw: bytes) -> None:
        """One line of an export file. An entry line exactly in the export's own layout, with
        every value in range, is read by a pattern (parsing is most of the cost of a line) and
        checked like any record; every other line is read as I-JSON (duplicate members and
        integers beyond 2**53 - 1 refused) and fed, so both ways fail with the same words."""
        match = _ENTRY_LINE.fullmatch(raw)
        if match is not None and self._intact_entry(where, match):
            return
        try:
            record = ijson.loads(raw)
        except ijson.NotIJson as error:
            raise TamperDetected(where, f"not I-JSON: {error}") from error
        self.feed(where, record)

    def _intact_entry(self, where: str, match: re.Match[bytes]) -> bool:
        """The entry line `match` holds, checked and counted if it is the next entry of the
        block and intact in every way `_entry` checks; False, having changed nothing, at the
        first doubt (the general path then reads the line and says what is wrong). The leaf
        is hashed from the line's own bytes: the pattern admits only canonical integers and
        strings JSON does not escape, so they are the JCS of the values (`leaf_hash`)."""
        block = self.block
        if block is None or self.ended:
            return False
        seq_text, transfer, leg_text, direction, account, amount_text, currency, posted = (
            match.groups()
        )
        seq, leg, amount = int(seq_text), int(leg_text), int(amount_text)
        if not (
            seq == block.checkpoint["first_seq"] + block.read
            and leg < limits.transfer_legs_max
            and limits.amount_minor_min <= amount <= limits.amount_minor_max
        ):
            return False
        if posted != self._valid_posted and not _valid_time(posted.decode()):
            return False
        self._valid_posted = posted  # a transfer's entries share their time: check it once
        leaf = hashlib.sha256(
            _LEAF_OF_LINE
            % (account, amount_text, currency, direction, leg_text, posted, seq_text, transfer)
        ).digest()
        transfer_id = transfer.decode()
        if leaf != block.leaves[block.read] or transfer_id in self.transfers:
            return False
        side = (account.decode(), amount, currency.decode(), where)
        if self.legs.add_fields(transfer_id, leg, direction.decode(), side) is not None:
            return False
        block.read += 1
        self.entries += 1
        if block.read == block.checkpoint["entry_count"]:
            self._complete(block)
        return True

    def feed(self, where: str, record: Any) -> None:
        if not isinstance(record, dict):
            raise TamperDetected(where, "not a JSON object")
        kind = record.get("type")
        if self.ended:
            raise TamperDetected(where, "a record after the end record")
        if self.header is None and kind != "export":
            raise TamperDetected(where, "the export header (type export) is missing")
        if kind == "entry":
            self._entry(where, record)
        elif kind == "checkpoint":
            self._checkpoint(where, record)
        elif kind == "export":
            self._header(where, record)
        elif kind == "end":
            self._end(where, record)
        else:
            raise TamperDetected(where, f"unknown record type {kind!r}")

    def finish(self, where: str) -> Summary:
        if not self.ended:
            self._close_block(where)
            raise TamperDetected(where, "the export ends without its end record: truncated")
        previous = self.previous
        return Summary(
            checkpoints=self.checkpoints,
            entries=self.entries,
            transfers=len(self.transfers),
            first_checkpoint=self.first_checkpoint,
            last_checkpoint=previous["number"] if previous else None,
            last_seq=previous["last_seq"] if previous else 0,
            last_digest=previous["digest"] if previous else GENESIS_DIGEST,
            key_ids=tuple(sorted(self.key_ids)),
            extends=self.extended_from,
            pinned=self.expect_digest is not None,
        )

    # -- records ----------------------------------------------------------------------------

    def _header(self, where: str, record: dict[str, Any]) -> None:
        if self.header is not None:
            raise TamperDetected(where, "a second export header")
        _exact_fields(where, record, ("format", "from", "to", "exported_at"))
        if record["format"] != FORMAT:
            raise TamperDetected(where, f"format {record['format']!r} is not {FORMAT}")
        first = _int(where, record, "from", 1)
        _int(where, record, "to", first - 1)
        _time(where, record, "exported_at")
        self.header = record

    def _checkpoint(self, where: str, record: dict[str, Any]) -> None:
        self._close_block(where)
        header = self.header or {}
        cp = _checkpoint_fields(where, record)
        number = cp["number"]
        previous = self.previous
        expected = previous["number"] + 1 if previous else header["from"]
        if number != expected:
            if previous is not None and number > expected:
                raise TamperDetected(
                    where,
                    f"checkpoint {number} follows checkpoint {previous['number']}: "
                    f"checkpoint {expected}..{number - 1} is missing",
                )
            raise TamperDetected(
                where, f"checkpoint {number} where checkpoint {expected} belongs (out of order)"
            )
        if number > header["to"]:
            raise TamperDetected(
                where, f"checkpoint {number} is past the export's last checkpoint {header['to']}"
            )
        self._check_link(where, cp, previous)
        check_signed(where, cp, self.keyring)
        leaves = _leaves(where, record, cp["entry_count"])
        if merkle_root(leaves).hex() != cp["entries_root"]:
            raise TamperDetected(
                where,
                f"checkpoint {number}: its leaf hashes do not hash to the signed entries_root",
            )
        self.key_ids.add(cp["key_id"])
        if self.first_checkpoint is None:
            self.first_checkpoint = number
        if self.extends is not None and self.extended_from is None:
            if previous is None and cp["previous_digest"] == self.extends:
                self.extended_from = number - 1
            elif cp["digest"] == self.extends:
                self.extended_from = number
        self.block = _Block(cp, where, leaves)

    def _check_link(self, where: str, cp: dict[str, Any], previous: dict[str, Any] | None) -> None:
        number = cp["number"]
        if previous is not None and cp["previous_digest"] != previous["digest"]:
            raise TamperDetected(
                where,
                f"checkpoint {number} does not link to checkpoint {previous['number']}: "
                f"previous_digest {cp['previous_digest']} is not its digest {previous['digest']}",
            )
        if number == 1 and (cp["previous_digest"] != GENESIS_DIGEST or cp["first_seq"] != 1):
            raise TamperDetected(where, "checkpoint 1 must start at seq 1 from the genesis digest")
        if previous is not None and cp["first_seq"] != previous["last_seq"] + 1:
            raise TamperDetected(
                where,
                f"checkpoint {number} starts at seq {cp['first_seq']}, not right after "
                f"checkpoint {previous['number']}'s last seq {previous['last_seq']}",
            )
        _check_count(where, cp)

    def _entry(self, where: str, record: dict[str, Any]) -> None:
        block = self.block
        if block is None:
            raise TamperDetected(
                where,
                f"entry seq {record.get('seq')} is not covered by a checkpoint: an entry was "
                "inserted, or its checkpoint record dropped",
            )
        entry = _entry_fields(where, record)
        cp, seq = block.checkpoint, entry["seq"]
        expected = cp["first_seq"] + block.read
        if seq != expected:
            if seq > expected:
                raise TamperDetected(
                    where,
                    f"entry seq {expected} is missing: seq {seq} stands where seq {expected} "
                    "belongs (deleted or reordered)",
                )
            raise TamperDetected(
                where, f"entry seq {seq} stands where seq {expected} belongs (repeated or moved)"
            )
        if _checked_leaf_hash(entry) != block.leaves[block.read]:
            raise TamperDetected(
                where,
                f"entry seq {seq} is not the entry sealed as seq {seq} in checkpoint "
                f"{cp['number']}: changed, inserted or swapped",
            )
        if entry["transfer_id"] in self.transfers:
            raise TamperDetected(
                where, f"transfer {entry['transfer_id']} already appeared in an earlier checkpoint"
            )
        problem = self.legs.add(entry, where)
        if problem is not None:
            raise TamperDetected(where, problem)
        block.read += 1
        self.entries += 1
        if block.read == cp["entry_count"]:
            self._complete(block)

    def _complete(self, block: _Block) -> None:
        unbalanced = self.legs.problem()
        if unbalanced is not None:
            raise TamperDetected(*unbalanced)
        self.transfers.update(self.legs.clear())
        self.checkpoints += 1
        self.previous = block.checkpoint
        self.block = None

    def _close_block(self, where: str) -> None:
        block = self.block
        if block is None:
            return
        cp = block.checkpoint
        raise TamperDetected(
            where,
            f"checkpoint {cp['number']} holds {cp['entry_count']} entries but only {block.read} "
            f"follow it: seq {cp['first_seq'] + block.read}..{cp['last_seq']} are missing",
        )

    def _end(self, where: str, record: dict[str, Any]) -> None:
        self._close_block(where)
        header = self.header or {}
        _exact_fields(where, record, ("checkpoints", "entries"))
        last = self.previous["number"] if self.previous else header["from"] - 1
        if last != header["to"]:
            raise TamperDetected(
                where,
                f"the export stops at checkpoint {last} but its header says it runs to "
                f"{header['to']}: checkpoint {last + 1}..{header['to']} is missing",
            )
        if (record["checkpoints"], record["entries"]) != (self.checkpoints, self.entries):
            raise TamperDetected(
                where,
                f"the end record counts {record['checkpoints']} checkpoints and "
                f"{record['entries']} entries; the export holds {self.checkpoints} and "
                f"{self.entries}",
            )
        self._check_pins(where, last)
        self.ended = True

    def _check_pins(self, where: str, last: int) -> None:
        """The digests the auditor holds: where the export must start from and end on."""
        header = self.header or {}
        if self.previous is not None:
            last_digest: str | None = self.previous["digest"]
        else:
            last_digest = GENESIS_DIGEST if header["from"] == 1 else None
        if self.expect_digest is not None and last_digest != self.expect_digest:
            raise TamperDetected(
                where,
                f"the export ends on checkpoint {last} with digest {last_digest}, not on the "
                f"expected digest {self.expect_digest}: a shortened export, or another ledger",
            )
        if self.extends is not None and self.extended_from is None:
            if self.extends == GENESIS_DIGEST and header["from"] == 1:
                self.extended_from = 0
                return
            raise TamperDetected(
                where,
                f"the export does not extend the checkpoint with digest {self.extends}: no "
                "checkpoint in it has that digest and its first checkpoint does not follow it",
            )


# -- field checks -----------------------------------------------------------------------------


def _exact_fields(where: str, record: Mapping[str, Any], fields: Sequence[str]) -> None:
    keys = set(record) - {"type"}
    if keys != set(fields):
        missing, extra = sorted(set(fields) - keys), sorted(keys - set(fields))
        raise TamperDetected(
            where, f"{record.get('type')} record fields wrong: missing {missing}, extra {extra}"
        )


def _int(where: str, record: Mapping[str, Any], key: str, low: int, high: int = 2**63) -> int:
    value = record[key]
    if type(value) is not int or not low <= value <= high:
        raise TamperDetected(where, f"{key} must be an integer in {low}..{high}: {value!r}")
    return value


def _text(where: str, record: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = record[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise TamperDetected(where, f"{key} is malformed: {value!r}")
    return value


def _valid_time(text: str) -> bool:
    """A time already in the pattern's form: is it a real date and time?"""
    try:
        datetime.fromisoformat(text[:-1])
    except ValueError:
        return False
    return True


def _time(where: str, record: Mapping[str, Any], key: str) -> str:
    value = _text(where, record, key, _TIME)
    try:
        datetime.fromisoformat(value[:-1])  # the form is checked: this checks the ranges
    except ValueError as error:
        raise TamperDetected(where, f"{key} is not a time: {value!r}") from error
    return value


def _uuid(where: str, record: Mapping[str, Any], key: str) -> str:
    """Exactly the strings equal to `str(UUID(s))`: lowercase hex in 8-4-4-4-12."""
    value = record[key]
    if not isinstance(value, str) or not _CANONICAL_UUID.fullmatch(value):
        raise TamperDetected(where, f"{key} is not a UUID in canonical form: {value!r}")
    return value


def _entry_fields(where: str, record: Mapping[str, Any]) -> dict[str, Any]:
    _exact_fields(where, record, ENTRY_FIELDS)
    direction = record["direction"]
    if direction not in ("debit", "credit"):
        raise TamperDetected(where, f"direction must be debit or credit: {direction!r}")
    return {
        "seq": _int(where, record, "seq", 1),
        "transfer_id": _uuid(where, record, "transfer_id"),
        "leg": _int(where, record, "leg", 0, limits.transfer_legs_max - 1),
        "direction": direction,
        "account_id": _uuid(where, record, "account_id"),
        "amount": _int(where, record, "amount", limits.amount_minor_min, limits.amount_minor_max),
        "currency": _text(where, record, "currency", _CURRENCY),
        "posted_at": _time(where, record, "posted_at"),
    }


def _checkpoint_fields(
    where: str, record: Mapping[str, Any], extra: Sequence[str] = ("leaves",)
) -> dict[str, Any]:
    _exact_fields(where, record, (*CHECKPOINT_FIELDS, *extra))
    return {
        "number": _int(where, record, "number", 1),
        "first_seq": _int(where, record, "first_seq", 1),
        "last_seq": _int(where, record, "last_seq", 1),
        "entry_count": _int(where, record, "entry_count", 1),
        "entries_root": _text(where, record, "entries_root", _HEX64),
        "previous_digest": _text(where, record, "previous_digest", _HEX64),
        "digest": _text(where, record, "digest", _HEX64),
        "key_id": _text(where, record, "key_id", _KEY_ID),
        "created_at": _time(where, record, "created_at"),
        "signature": _text(where, record, "signature", _HEX128),
    }


def check_signed(where: str, cp: Mapping[str, Any], keyring: Keyring) -> None:
    """A checkpoint record's digest matches its fields, and a trusted key signed it."""
    number = cp["number"]
    if checkpoint_digest(cp) != cp["digest"]:
        raise TamperDetected(
            where, f"checkpoint {number}: its digest does not match its fields (changed)"
        )
    if not keyring.knows(cp["key_id"]):
        raise TamperDetected(
            where,
            f"checkpoint {number} is signed by key {cp['key_id']}, "
            "which is not among the trusted public keys",
        )
    if not keyring.verify(cp["key_id"], signing_message(cp), bytes.fromhex(cp["signature"])):
        raise TamperDetected(
            where, f"checkpoint {number}: the signature does not verify (forged or changed)"
        )


def checked_entry(where: str, record: Any) -> dict[str, Any]:
    """An entry record as /v1/ledger/entries answers it (no `type`), in canonical form."""
    if not isinstance(record, dict) or "type" in record:
        raise TamperDetected(where, "not an entry record")
    return _entry_fields(where, record)


def checked_checkpoint(where: str, record: Any) -> dict[str, Any]:
    """A signed checkpoint record as /v1/ledger/checkpoints answers it (no `type`, no
    `leaves`), in canonical form, its seqs consistent with its entry_count."""
    if not isinstance(record, dict) or "type" in record:
        raise TamperDetected(where, "not a checkpoint record")
    cp = _checkpoint_fields(where, record, ())
    _check_count(where, cp)
    return cp


def _check_count(where: str, cp: Mapping[str, Any]) -> None:
    """A checkpoint's seqs hold its entry_count entries, within the checkpoint size limit."""
    count = cp["entry_count"]
    if not 1 <= count <= limits.ledger_checkpoint_entries_max or (
        cp["last_seq"] != cp["first_seq"] + count - 1
    ):
        raise TamperDetected(
            where,
            f"checkpoint {cp['number']}: seqs {cp['first_seq']}..{cp['last_seq']} "
            f"do not hold {count} entries",
        )


def _leaves(where: str, record: Mapping[str, Any], count: int) -> list[bytes]:
    leaves = record["leaves"]
    if not isinstance(leaves, list) or len(leaves) != count:
        raise TamperDetected(where, f"leaves must list the {count} entries' leaf hashes")
    # All at once (a checkpoint lists thousands): 64 characters each, lowercase hex together.
    if not (
        all(isinstance(leaf, str) and len(leaf) == 64 for leaf in leaves)
        and _LOWER_HEX.fullmatch(joined := "".join(leaves))
    ):
        raise TamperDetected(where, "a leaf hash is malformed")
    raw = bytes.fromhex(joined)
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def key_id_of(public_key_raw: bytes) -> str:
    """A key's id: the first 16 bytes of SHA-256 of its raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key_raw).hexdigest()[:32]


def export_header(first: int, last: int, exported_at: datetime) -> dict[str, Any]:
    return {
        "type": "export",
        "format": FORMAT,
        "from": first,
        "to": last,
        "exported_at": format_time(exported_at),
    }


def checkpoint_line(checkpoint: Checkpoint, leaves: Sequence[bytes]) -> dict[str, Any]:
    return {"type": "checkpoint", **checkpoint.record(), "leaves": [leaf.hex() for leaf in leaves]}


def entry_line(entry: LedgerEntry) -> dict[str, Any]:
    return {"type": "entry", **entry.record()}


def entry_json(entry: LedgerEntry) -> str:
    """`json.dumps(entry_line(entry), separators=(",", ":"))`, written out directly (the
    export's hot path; a unit test compares the two)."""
    return entry_json_of(
        entry.seq,
        str(entry.transfer_id),
        entry.leg,
        str(entry.direction),
        str(entry.account_id),
        entry.amount,
        entry.currency,
        format_time(entry.posted_at),
    )


def entry_json_of(
    seq: int,
    transfer_id: str,
    leg: int,
    direction: str,
    account_id: str,
    amount: int,
    currency: str,
    posted_at: str,
) -> str:
    """An entry's export line from its columns (UUIDs as canonical text, the time in the
    ledger's form). Only the currency and direction could need escaping, and only in a
    database someone tampered with: then the general encoder writes them."""
    if not (
        len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()
    ) or direction not in ("debit", "credit"):
        record = {
            "type": "entry",
            "seq": seq,
            "transfer_id": transfer_id,
            "leg": leg,
            "direction": direction,
            "account_id": account_id,
            "amount": amount,
            "currency": currency,
            "posted_at": posted_at,
        }
        return json.dumps(record, separators=(",", ":"))
    return (
        f'{{"type":"entry","seq":{seq},"transfer_id":"{transfer_id}","leg":{leg},'
        f'"direction":"{direction}","account_id":"{account_id}","amount":{amount},'
        f'"currency":"{currency}","posted_at":"{posted_at}"}}'
    )


_DATABASE_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}) ([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,6}))?"
)


def time_of_database_text(text: str) -> str:
    """A UTC timestamp as PostgreSQL and CockroachDB print it (`2026-01-31 12:00:00.12`: ISO
    style, trailing zeros of the fraction dropped) in the ledger's form
    (`2026-01-31T12:00:00.120000Z`), without building a datetime (the export's hot path)."""
    if (  # the common case, a full fraction: the type fixes the digits, this checks the style
        len(text) == 26
        and text[4] == text[7] == "-"
        and text[10] == " "
        and text[13] == text[16] == ":"
        and text[19] == "."
    ):
        return f"{text[:10]}T{text[11:]}Z"
    match = _DATABASE_TIME.fullmatch(text)
    if match is None:
        raise InvariantViolation(f"the database printed a time as {text!r}")
    day, clock, fraction = match.groups()
    return f"{day}T{clock}.{(fraction or '').ljust(6, '0')}Z"


def end_line(checkpoints: int, entries: int) -> dict[str, Any]:
    return {"type": "end", "checkpoints": checkpoints, "entries": entries}
