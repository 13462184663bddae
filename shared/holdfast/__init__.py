"""Holdfast: accounts, TCC transfers and a signed double-entry ledger.

Layers (checked by import-linter, see pyproject.toml):

    entrypoints  (HTTP, CloudEvents, CLI, dev supervisor)
        -> services  (one use case per unit of work)
            -> adapters  (database, outbox, tokens, keys)
                -> domain  (plain Python: money rules, state machine, errors)
"""

__version__ = "0.1.0"
