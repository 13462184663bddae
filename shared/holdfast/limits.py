"""Every limit Holdfast enforces, in one place. Units are the last word of each name."""

from typing import Final

# Money: JSON-safe integers in minor units (2**53 - 1 is the largest exact JSON number).
amount_minor_min: Final = 1
amount_minor_max: Final = 9_007_199_254_740_991
# Counters on an account sum many amounts: stay inside a signed 64-bit column.
balance_minor_abs_max: Final = 2**63 - 1

transfer_legs_max: Final = 16
reservation_timeout_s_min: Final = 1
reservation_timeout_s_max: Final = 86_400
reservation_timeout_s_default: Final = 300

batch_operations_max: Final = 1_000
page_limit_max: Final = 1_000
page_limit_default: Final = 100

owner_length_max: Final = 256
metadata_bytes_max: Final = 8_192
metadata_keys_max: Final = 64
request_body_bytes_max: Final = 4 * 1024 * 1024
event_bytes_max: Final = 64 * 1024

# Transactions: SQLSTATE 40001 is retried, but never forever.
transaction_attempts_max: Final = 12
transaction_backoff_s_first: Final = 0.002
transaction_backoff_s_max: Final = 0.25

# Sweeps and relays work in bounded batches.
expiry_sweep_batch_max: Final = 500

# The outbox relay: bounded claims, leases, sends, backoff and pruning.
relay_batch_max: Final = 256  # rows claimed in one lease
relay_claim_scan_max: Final = 4_096  # oldest unpublished rows a claim looks at
relay_lease_s: Final = 30.0  # how long a claim is exclusive
relay_send_timeout_s: Final = 5.0  # one POST to K_SINK, end to end
relay_clock_margin_s: Final = 1.0  # kept free at the end of a lease for clock offsets
relay_concurrency_max: Final = 32  # subjects sent at once by one relay
relay_backoff_s_first: Final = 0.5
relay_backoff_s_max: Final = 60.0
relay_idle_poll_s: Final = 0.1  # pause when there was nothing to claim
relay_error_pause_s_max: Final = 5.0  # pause after the database failed a relay step
relay_prune_interval_s: Final = 60.0
relay_prune_batch_max: Final = 1_000  # rows deleted in one transaction
relay_prune_rounds_max: Final = 10  # transactions in one prune
relay_published_retention_s: Final = 3_600.0  # published rows kept for inspection
relay_error_chars_max: Final = 500  # last_error kept per row

# The ledger: sealing batches, checkpoint size, and the page size of reads and exports.
ledger_seal_batch_entries: Final = 5_000  # entries a sealing transaction starts from
# A batch is completed to whole transfers, so a checkpoint may hold a few more entries.
ledger_checkpoint_entries_max: Final = ledger_seal_batch_entries + 2 * transfer_legs_max
ledger_seal_batches_per_tick_max: Final = 20  # checkpoints one tick may seal
ledger_export_page_entries: Final = 5_000  # entries read in one transaction of an export
# Proofs: a checkpoint's audit path has at most 13 hashes; 64 bounds any tree of int64 seqs.
ledger_audit_path_hashes_max: Final = 64
# What `holdfast audit prove` / `extends` read whole (a proof is a few KB, a page of 1,000
# checkpoint records about 0.6 MB).
audit_json_file_bytes_max: Final = 64 * 1024 * 1024
audit_json_file_lines_max: Final = 100_000
# Running totals are kept at the end of each block of about this many sealed entries: a
# point-in-time read sums at most a block or two of entries besides its index lookups.
ledger_totals_block_entries: Final = 256

# How often the relay measures the outbox backlog for its gauges.
relay_measure_interval_s: Final = 5.0
