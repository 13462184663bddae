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
