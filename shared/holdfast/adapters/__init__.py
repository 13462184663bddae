"""Adapters: everything that does I/O (database, outbox, tokens, keys)."""
