"""The domain: money rules, accounts, the transfer state machine, ledger postings.

Plain Python only: no database, HTTP or CloudEvents imports (checked by import-linter).
"""
