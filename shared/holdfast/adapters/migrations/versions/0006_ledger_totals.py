"""Running totals of the sealed ledger: point-in-time reads that do not grow with history.

The sealer, the ledger's single ordered writer, cuts each checkpoint into blocks (contiguous
seq ranges, `limits.ledger_totals_block_entries` entries or so) and records at the end of each
block, in the same transaction as the seal:

- `ledger_seal_points`: the block's seqs and checkpoint, its earliest `posted_at`, the largest
  `posted_at` of it and of every earlier block (`posted_at_max`, never decreasing), and
  `lateness_max`, the most any block so far reached back below its predecessors'
  `posted_at_max` (entries whose confirm committed after a seal had passed their time);
- `ledger_account_totals`: per account touched in the block, its cumulative debits, credits
  and entry count over all sealed entries up to the block's last seq;
- `ledger_currency_totals`: per currency seen so far, cumulative debits and credits.

Nothing here is on the transfer path: confirms still only insert their entries and queue rows.
The rows are derived from immutable history and only ever inserted (the functions' shared role
loses UPDATE and DELETE on them; the ledger role may SELECT and INSERT). `holdfast audit check`
recomputes them all from the entries. Existing history is backfilled here, one block per
checkpoint (any contiguous block works for the reads; see services/ledger.py).

Only SQL that both PostgreSQL and CockroachDB run: window functions, INTERVAL, CTEs.

Revision ID: 0006
"""

from alembic import op

revision = "0006"
down_revision = "0005"

TABLES = ("ledger_seal_points", "ledger_account_totals", "ledger_currency_totals")

STATEMENTS = [
    """
    CREATE TABLE ledger_seal_points (
        last_seq BIGINT PRIMARY KEY,
        first_seq BIGINT NOT NULL CHECK (first_seq >= 1),
        checkpoint BIGINT NOT NULL REFERENCES ledger_checkpoints (number),
        first_posted_at TIMESTAMPTZ NOT NULL,
        posted_at_max TIMESTAMPTZ NOT NULL,
        lateness_max INTERVAL NOT NULL,
        CHECK (last_seq >= first_seq),
        CHECK (posted_at_max >= first_posted_at)
    )
    """,
    # "The last seal point at or before T" and "the first one after T" are one index probe.
    "CREATE INDEX ledger_seal_points_time_idx ON ledger_seal_points (posted_at_max, last_seq)",
    """
    CREATE TABLE ledger_account_totals (
        account_id UUID NOT NULL,
        last_seq BIGINT NOT NULL REFERENCES ledger_seal_points (last_seq),
        debits BIGINT NOT NULL CHECK (debits >= 0),
        credits BIGINT NOT NULL CHECK (credits >= 0),
        entries BIGINT NOT NULL CHECK (entries >= 1),
        PRIMARY KEY (account_id, last_seq)
    )
    """,
    # A currency's totals may exceed 64 bits where no single account's can: NUMERIC.
    """
    CREATE TABLE ledger_currency_totals (
        last_seq BIGINT NOT NULL REFERENCES ledger_seal_points (last_seq),
        currency TEXT NOT NULL,
        debits NUMERIC NOT NULL CHECK (debits >= 0),
        credits NUMERIC NOT NULL CHECK (credits >= 0),
        PRIMARY KEY (last_seq, currency)
    )
    """,
    "GRANT SELECT, INSERT ON TABLE ledger_seal_points, ledger_account_totals, "
    "ledger_currency_totals TO holdfast_ledger",
    # 0002's default privileges gave the shared role full DML: these rows are only inserted.
    "REVOKE UPDATE, DELETE ON TABLE ledger_seal_points, ledger_account_totals, "
    "ledger_currency_totals FROM holdfast_functions",
]

# -- the backfill: one block per checkpoint sealed before this migration --------------------

BACKFILL_POINTS = """
INSERT INTO ledger_seal_points (last_seq, first_seq, checkpoint, first_posted_at,
                                posted_at_max, lateness_max)
SELECT last_seq, first_seq, number, first_posted_at, posted_at_max,
       max(greatest(coalesce(previous_max - first_posted_at, interval '0'), interval '0'))
           OVER (ORDER BY number ROWS UNBOUNDED PRECEDING)
FROM (
    SELECT number, first_seq, last_seq, first_posted_at, posted_at_max,
           lag(posted_at_max) OVER (ORDER BY number) AS previous_max
    FROM (
        SELECT c.number, c.first_seq, c.last_seq, b.first_posted_at,
               max(b.block_max) OVER (ORDER BY c.number ROWS UNBOUNDED PRECEDING)
                   AS posted_at_max
        FROM ledger_checkpoints c
        JOIN (SELECT s.checkpoint, min(e.posted_at) AS first_posted_at,
                     max(e.posted_at) AS block_max
              FROM ledger_sequence s JOIN ledger_entries e ON e.id = s.entry_id
              GROUP BY s.checkpoint) b ON b.checkpoint = c.number
    ) x
) y
"""

BACKFILL_ACCOUNTS = """
INSERT INTO ledger_account_totals (account_id, last_seq, debits, credits, entries)
SELECT account_id, last_seq,
       CAST(sum(d) OVER w AS BIGINT), CAST(sum(c) OVER w AS BIGINT), CAST(sum(n) OVER w AS BIGINT)
FROM (
    SELECT s.account_id, p.last_seq,
           sum(CASE WHEN e.direction = 'debit' THEN e.amount ELSE 0 END) AS d,
           sum(CASE WHEN e.direction = 'credit' THEN e.amount ELSE 0 END) AS c,
           count(*) AS n
    FROM ledger_sequence s
    JOIN ledger_entries e ON e.id = s.entry_id
    JOIN ledger_seal_points p ON p.checkpoint = s.checkpoint
    GROUP BY s.account_id, p.last_seq
) x
WINDOW w AS (PARTITION BY account_id ORDER BY last_seq ROWS UNBOUNDED PRECEDING)
"""

BACKFILL_CURRENCIES = """
INSERT INTO ledger_currency_totals (last_seq, currency, debits, credits)
SELECT last_seq, currency, debits, credits FROM (
    SELECT g.last_seq, g.currency,
           sum(g.d) OVER w AS debits, sum(g.c) OVER w AS credits, sum(g.n) OVER w AS n
    FROM (
        SELECT p.last_seq, k.currency, coalesce(x.d, 0) AS d, coalesce(x.c, 0) AS c,
               coalesce(x.n, 0) AS n
        FROM ledger_seal_points p
        CROSS JOIN (SELECT DISTINCT currency FROM ledger_entries) k
        LEFT JOIN (
            SELECT s.checkpoint, e.currency,
                   sum(CASE WHEN e.direction = 'debit' THEN e.amount ELSE 0 END) AS d,
                   sum(CASE WHEN e.direction = 'credit' THEN e.amount ELSE 0 END) AS c,
                   count(*) AS n
            FROM ledger_sequence s JOIN ledger_entries e ON e.id = s.entry_id
            GROUP BY s.checkpoint, e.currency
        ) x ON x.checkpoint = p.checkpoint AND x.currency = k.currency
    ) g
    WINDOW w AS (PARTITION BY g.currency ORDER BY g.last_seq ROWS UNBOUNDED PRECEDING)
) z
WHERE n > 0
"""

BACKFILL = (BACKFILL_POINTS, BACKFILL_ACCOUNTS, BACKFILL_CURRENCIES)


def upgrade() -> None:
    for statement in (*STATEMENTS, *BACKFILL):
        op.execute(statement)
