"""SQL of the ledger's running totals (migration 0006; the design is `domain.ledger_totals`).

The sealer writes seal points and totals in its own transaction; the auditor's point-in-time
reads are one statement each: index probes for the bounds and the base totals, plus a tail of
at most a block or two of entries and the sealing queue. The tail's entries are read through
LATERAL subqueries kept apart by `OFFSET 0` (the planner may not flatten them), so that each
is a primary-key probe from the sequence range or the queue (both small), never a scan of
the entries (all of history) that a stale row estimate could otherwise choose; the base
totals compare with `(SELECT base_seq FROM bounds)`, a value, so that it bounds the index
range (as a join filter it would walk back through all the account's later totals). Both sides
run at snapshot isolation (`adapters.ledger.snapshot`), so a read sees whole seals.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from holdfast.domain.ledger_totals import NO_LATENESS, Recorded, SealPoint, Totals

# The seal points that bound a read as of :as_of (see domain.ledger_totals): `base_seq`, the
# last point whose posted_at_max <= as_of (0: none), and `tail_seq`, the first point whose
# posted_at_max > as_of + lateness_max (the largest BIGINT: none). `tail_blocks`: the seq
# ranges whose entries are summed one by one: the blocks after the base up to the tail point
# that start at or before as_of (a block whose earliest entry is later holds none that count),
# and any seqs sealed beyond the last seal point (none while the sealer keeps its rule).
BOUNDS = """
bounds AS (
    SELECT
        coalesce((SELECT p.last_seq FROM ledger_seal_points p
                  WHERE p.posted_at_max <= CAST(:as_of AS TIMESTAMPTZ)
                  ORDER BY p.posted_at_max DESC, p.last_seq DESC LIMIT 1), 0) AS base_seq,
        coalesce((SELECT p.last_seq FROM ledger_seal_points p
                  WHERE p.posted_at_max > CAST(:as_of AS TIMESTAMPTZ) + coalesce(
                      (SELECT l.lateness_max FROM ledger_seal_points l
                       ORDER BY l.last_seq DESC LIMIT 1), INTERVAL '0')
                  ORDER BY p.posted_at_max, p.last_seq LIMIT 1),
                 9223372036854775807) AS tail_seq
),
tail_blocks AS (
    SELECT p.first_seq, p.last_seq FROM bounds b
    JOIN ledger_seal_points p ON p.last_seq > b.base_seq AND p.last_seq <= b.tail_seq
    WHERE p.first_posted_at <= CAST(:as_of AS TIMESTAMPTZ)
    UNION ALL
    SELECT coalesce(max(p.last_seq), 0) + 1, 9223372036854775807 FROM ledger_seal_points p
)"""

ACCOUNT_AS_OF = sa.text(
    f"""
WITH {BOUNDS},
base AS (
    SELECT t.debits, t.credits, t.entries FROM ledger_account_totals t
    WHERE t.account_id = :account_id AND t.last_seq <= (SELECT base_seq FROM bounds)
    ORDER BY t.last_seq DESC LIMIT 1
),
tail AS (
    SELECT e.direction, e.amount FROM tail_blocks p
    CROSS JOIN LATERAL (SELECT s.entry_id FROM ledger_sequence s
                        WHERE s.account_id = :account_id
                          AND s.seq BETWEEN p.first_seq AND p.last_seq OFFSET 0) s
    CROSS JOIN LATERAL (SELECT e.direction, e.amount FROM ledger_entries e
                        WHERE e.id = s.entry_id AND e.posted_at <= CAST(:as_of AS TIMESTAMPTZ)
                        OFFSET 0) e
    UNION ALL
    SELECT e.direction, e.amount FROM ledger_unsequenced q
    CROSS JOIN LATERAL (SELECT e.direction, e.amount FROM ledger_entries e
                        WHERE e.id = q.entry_id AND e.account_id = :account_id OFFSET 0) e
    WHERE q.posted_at <= CAST(:as_of AS TIMESTAMPTZ)
)
SELECT
    coalesce((SELECT debits FROM base), 0)
        + coalesce((SELECT sum(amount) FROM tail WHERE direction = 'debit'), 0) AS debits,
    coalesce((SELECT credits FROM base), 0)
        + coalesce((SELECT sum(amount) FROM tail WHERE direction = 'credit'), 0) AS credits,
    coalesce((SELECT entries FROM base), 0) + (SELECT count(*) FROM tail) AS entries
"""
)

TRIAL_AS_OF = sa.text(
    f"""
WITH {BOUNDS},
base AS (
    SELECT c.currency, c.debits, c.credits FROM ledger_currency_totals c
    WHERE c.last_seq = (SELECT base_seq FROM bounds)
),
tail AS (
    SELECT e.currency, e.direction, e.amount FROM tail_blocks p
    CROSS JOIN LATERAL (SELECT s.entry_id FROM ledger_sequence s
                        WHERE s.seq BETWEEN p.first_seq AND p.last_seq OFFSET 0) s
    CROSS JOIN LATERAL (SELECT e.currency, e.direction, e.amount FROM ledger_entries e
                        WHERE e.id = s.entry_id AND e.posted_at <= CAST(:as_of AS TIMESTAMPTZ)
                        OFFSET 0) e
    UNION ALL
    SELECT e.currency, e.direction, e.amount FROM ledger_unsequenced q
    CROSS JOIN LATERAL (SELECT e.currency, e.direction, e.amount FROM ledger_entries e
                        WHERE e.id = q.entry_id OFFSET 0) e
    WHERE q.posted_at <= CAST(:as_of AS TIMESTAMPTZ)
)
SELECT currency, 'debit' AS direction, debits AS total FROM base
UNION ALL SELECT currency, 'credit', credits FROM base
UNION ALL SELECT currency, direction, sum(amount) FROM tail GROUP BY currency, direction
"""
)


def account_as_of(connection: Connection, account_id: UUID, as_of: datetime) -> Totals:
    """The account's entries with posted_at <= as_of, summed from the totals (see module)."""
    row = connection.execute(ACCOUNT_AS_OF, {"account_id": account_id, "as_of": as_of}).one()
    return Totals(int(row.debits), int(row.credits), int(row.entries))


def trial_as_of(connection: Connection, as_of: datetime) -> dict[str, dict[str, int]]:
    """Per currency and direction, the sum of entries with posted_at <= as_of (directions
    without any such entry left out, as a plain sum over the entries would give them)."""
    totals: dict[str, dict[str, int]] = {}
    for row in connection.execute(TRIAL_AS_OF, {"as_of": as_of}):
        sides = totals.setdefault(row.currency, {})
        sides[row.direction] = sides.get(row.direction, 0) + int(row.total)
    return {
        currency: {d: total for d, total in sides.items() if total}
        for currency, sides in totals.items()
        if any(sides.values())
    }


# -- the sealer ---------------------------------------------------------------------------


def latest_point(connection: Connection) -> SealPoint | None:
    row = connection.execute(
        sa.text(
            "SELECT first_seq, last_seq, checkpoint, first_posted_at, posted_at_max, "
            "lateness_max FROM ledger_seal_points ORDER BY last_seq DESC LIMIT 1"
        )
    ).first()
    if row is None:
        return None
    return SealPoint(
        row.first_seq,
        row.last_seq,
        row.checkpoint,
        row.first_posted_at,
        row.posted_at_max,
        row.lateness_max,
    )


def currency_totals(connection: Connection, last_seq: int) -> dict[str, Totals]:
    rows = connection.execute(
        sa.text("SELECT currency, debits, credits FROM ledger_currency_totals WHERE last_seq = :s"),
        {"s": last_seq},
    )
    return {row.currency: Totals(int(row.debits), int(row.credits)) for row in rows}


def account_totals(connection: Connection, account_ids: Sequence[UUID]) -> dict[UUID, Totals]:
    """The latest totals of each of these accounts (one index probe each, one statement)."""
    if not account_ids:
        return {}
    rows = connection.execute(
        sa.text(
            "SELECT a.id, x.debits, x.credits, x.entries "
            "FROM unnest(CAST(:ids AS UUID[])) AS a (id) CROSS JOIN LATERAL "
            "(SELECT t.debits, t.credits, t.entries FROM ledger_account_totals t "
            "WHERE t.account_id = a.id ORDER BY t.last_seq DESC LIMIT 1) x"
        ),
        {"ids": list(account_ids)},
    )
    return {row.id: Totals(row.debits, row.credits, row.entries) for row in rows}


def insert(connection: Connection, recorded: Recorded) -> None:
    """The seal points first (the totals reference them), each table in one statement."""
    points = recorded.points
    connection.execute(
        sa.text(
            "INSERT INTO ledger_seal_points (last_seq, first_seq, checkpoint, first_posted_at, "
            "posted_at_max, lateness_max) SELECT l, f, c, fp, pm, lm FROM unnest("
            "CAST(:last AS BIGINT[]), CAST(:first AS BIGINT[]), CAST(:checkpoint AS BIGINT[]), "
            "CAST(:first_posted AS TIMESTAMPTZ[]), CAST(:posted_max AS TIMESTAMPTZ[]), "
            "CAST(:lateness AS INTERVAL[])) AS x (l, f, c, fp, pm, lm)"
        ),
        {
            "last": [p.last_seq for p in points],
            "first": [p.first_seq for p in points],
            "checkpoint": [p.checkpoint for p in points],
            "first_posted": [p.first_posted_at for p in points],
            "posted_max": [p.posted_at_max for p in points],
            "lateness": [p.lateness_max for p in points],
        },
    )
    accounts = recorded.accounts
    connection.execute(
        sa.text(
            "INSERT INTO ledger_account_totals (account_id, last_seq, debits, credits, entries) "
            "SELECT a, l, d, c, n FROM unnest(CAST(:accounts AS UUID[]), "
            "CAST(:last AS BIGINT[]), CAST(:debits AS BIGINT[]), CAST(:credits AS BIGINT[]), "
            "CAST(:entries AS BIGINT[])) AS x (a, l, d, c, n)"
        ),
        {
            "accounts": [account for account, _, _ in accounts],
            "last": [last for _, last, _ in accounts],
            "debits": [totals.debits for _, _, totals in accounts],
            "credits": [totals.credits for _, _, totals in accounts],
            "entries": [totals.entries for _, _, totals in accounts],
        },
    )
    currencies = recorded.currencies
    connection.execute(
        sa.text(
            "INSERT INTO ledger_currency_totals (last_seq, currency, debits, credits) "
            "SELECT l, k, d, c FROM unnest(CAST(:last AS BIGINT[]), CAST(:currencies AS TEXT[]), "
            "CAST(:debits AS NUMERIC[]), CAST(:credits AS NUMERIC[])) AS x (l, k, d, c)"
        ),
        {
            "last": [last for last, _, _ in currencies],
            "currencies": [currency for _, currency, _ in currencies],
            "debits": [totals.debits for _, _, totals in currencies],
            "credits": [totals.credits for _, _, totals in currencies],
        },
    )


# -- `holdfast audit check`: the totals recomputed from the entries ------------------------

# Per seal point: the entries its seqs cover, and the checkpoint that sealed them.
POINT_FACTS = sa.text(
    """
SELECT p.last_seq, p.first_seq, p.checkpoint, p.first_posted_at, p.posted_at_max,
       p.lateness_max, c.first_seq AS checkpoint_first, c.last_seq AS checkpoint_last,
       x.n, x.earliest, x.latest
FROM ledger_seal_points p
LEFT JOIN ledger_checkpoints c ON c.number = p.checkpoint
LEFT JOIN LATERAL (
    SELECT count(e.id) AS n, min(e.posted_at) AS earliest, max(e.posted_at) AS latest
    FROM ledger_sequence s LEFT JOIN ledger_entries e ON e.id = s.entry_id
    WHERE s.seq BETWEEN p.first_seq AND p.last_seq
) x ON true
ORDER BY p.last_seq
"""
)

# Per (account, seal point) where the account has entries in the point's block: the running
# sums, against the stored rows; a row missing on either side shows up with NULLs.
ACCOUNT_DIFFERENCES = sa.text(
    """
WITH blocks AS (
    SELECT s.account_id, p.last_seq,
           sum(CASE WHEN e.direction = 'debit' THEN e.amount ELSE 0 END) AS d,
           sum(CASE WHEN e.direction = 'credit' THEN e.amount ELSE 0 END) AS c,
           count(*) AS n
    FROM ledger_seal_points p
    JOIN ledger_sequence s ON s.seq BETWEEN p.first_seq AND p.last_seq
    JOIN ledger_entries e ON e.id = s.entry_id
    GROUP BY s.account_id, p.last_seq
), expected AS (
    SELECT account_id, last_seq, sum(d) OVER w AS debits, sum(c) OVER w AS credits,
           sum(n) OVER w AS entries
    FROM blocks
    WINDOW w AS (PARTITION BY account_id ORDER BY last_seq ROWS UNBOUNDED PRECEDING)
)
SELECT coalesce(x.account_id, t.account_id) AS account_id,
       coalesce(x.last_seq, t.last_seq) AS last_seq,
       x.debits AS want_debits, x.credits AS want_credits, x.entries AS want_entries,
       t.debits, t.credits, t.entries
FROM expected x
FULL OUTER JOIN ledger_account_totals t
    ON t.account_id = x.account_id AND t.last_seq = x.last_seq
WHERE x.account_id IS NULL OR t.account_id IS NULL OR x.debits <> t.debits
   OR x.credits <> t.credits OR x.entries <> t.entries
ORDER BY 2, 1 LIMIT :n
"""
)

CURRENCY_DIFFERENCES = sa.text(
    """
WITH blocks AS (
    SELECT e.currency, p.last_seq,
           sum(CASE WHEN e.direction = 'debit' THEN e.amount ELSE 0 END) AS d,
           sum(CASE WHEN e.direction = 'credit' THEN e.amount ELSE 0 END) AS c,
           count(*) AS n
    FROM ledger_seal_points p
    JOIN ledger_sequence s ON s.seq BETWEEN p.first_seq AND p.last_seq
    JOIN ledger_entries e ON e.id = s.entry_id
    GROUP BY e.currency, p.last_seq
), grid AS (
    SELECT p.last_seq, k.currency, coalesce(b.d, 0) AS d, coalesce(b.c, 0) AS c,
           coalesce(b.n, 0) AS n
    FROM ledger_seal_points p
    CROSS JOIN (SELECT DISTINCT currency FROM blocks) k
    LEFT JOIN blocks b ON b.last_seq = p.last_seq AND b.currency = k.currency
), expected AS (
    SELECT last_seq, currency, debits, credits FROM (
        SELECT last_seq, currency, sum(d) OVER w AS debits, sum(c) OVER w AS credits,
               sum(n) OVER w AS n
        FROM grid
        WINDOW w AS (PARTITION BY currency ORDER BY last_seq ROWS UNBOUNDED PRECEDING)
    ) r WHERE n > 0
)
SELECT coalesce(x.currency, t.currency) AS currency, coalesce(x.last_seq, t.last_seq) AS last_seq,
       x.debits AS want_debits, x.credits AS want_credits, t.debits, t.credits
FROM expected x
FULL OUTER JOIN ledger_currency_totals t ON t.currency = x.currency AND t.last_seq = x.last_seq
WHERE x.currency IS NULL OR t.currency IS NULL OR x.debits <> t.debits OR x.credits <> t.credits
ORDER BY 2, 1 LIMIT :n
"""
)


def point_findings(connection: Connection, limit: int) -> list[str]:
    """Seal points that do not tile the sealed seqs, or whose times differ from their entries'."""
    findings: list[str] = []
    previous: SealPoint | None = None
    for row in connection.execute(POINT_FACTS):
        where = f"seal point {row.first_seq}..{row.last_seq}"
        expected_first = previous.last_seq + 1 if previous else 1
        if row.first_seq != expected_first:
            findings.append(f"{where}: should start at seq {expected_first}")
        if row.checkpoint_first is None or not (
            row.checkpoint_first <= row.first_seq and row.last_seq <= row.checkpoint_last
        ):
            findings.append(f"{where}: outside its checkpoint {row.checkpoint}")
        if row.n != row.last_seq - row.first_seq + 1:
            findings.append(f"{where}: covers {row.n} sealed entries")
        elif (row.first_posted_at, row.posted_at_max, row.lateness_max) != _times(
            previous, row.earliest, row.latest
        ):
            findings.append(f"{where}: its times differ from its entries'")
        previous = SealPoint(
            row.first_seq,
            row.last_seq,
            row.checkpoint,
            row.first_posted_at,
            row.posted_at_max,
            row.lateness_max,
        )
        if len(findings) >= limit:
            return findings
    sealed = connection.execute(sa.text("SELECT max(seq) FROM ledger_sequence")).scalar()
    if (sealed or 0) != (previous.last_seq if previous else 0):
        findings.append(
            f"seal points end at seq {previous.last_seq if previous else 0}, "
            f"the sealed entries at {sealed or 0}"
        )
    return findings


def _times(
    previous: SealPoint | None, earliest: datetime, latest: datetime
) -> tuple[datetime, datetime, timedelta]:
    if previous is None:
        return earliest, latest, NO_LATENESS
    return (
        earliest,
        max(previous.posted_at_max, latest),
        max(previous.lateness_max, previous.posted_at_max - earliest, NO_LATENESS),
    )


def totals_findings(connection: Connection, limit: int) -> list[str]:
    findings = []
    for row in connection.execute(ACCOUNT_DIFFERENCES, {"n": limit}):
        findings.append(
            f"account {row.account_id} at seq {row.last_seq}: ledger_account_totals holds "
            f"{_triple(row.debits, row.credits, row.entries)}, its entries sum to "
            f"{_triple(row.want_debits, row.want_credits, row.want_entries)}"
        )
    for row in connection.execute(CURRENCY_DIFFERENCES, {"n": limit}):
        findings.append(
            f"currency {row.currency} at seq {row.last_seq}: ledger_currency_totals holds "
            f"{_triple(row.debits, row.credits, None)}, its entries sum to "
            f"{_triple(row.want_debits, row.want_credits, None)}"
        )
    return findings


def _triple(debits: object, credits: object, entries: object) -> str:
    if debits is None:
        return "no row"
    counted = f" in {entries} entries" if entries is not None else ""
    return f"debits {debits} credits {credits}{counted}"
