"""Key rotation for personal data at rest: re-seal every row under the active key."""

from __future__ import annotations

from functools import partial

from holdfast.adapters import repository
from holdfast.adapters.database import Database

RESEAL_BATCH_MAX = 500


def rotate_metadata_keys(db: Database, batch_max: int = RESEAL_BATCH_MAX) -> dict[str, int]:
    """Re-seal, in bounded transactions, every row sealed with another key; return counts."""
    counts: dict[str, int] = {}
    for table in repository.SEALED_TABLES:
        total = 0
        while True:
            done = db.run(
                partial(repository.reseal_batch, table=table, cipher=db.cipher, limit=batch_max)
            )
            total += done
            if done < batch_max:
                break
        counts[table] = total
    return counts
