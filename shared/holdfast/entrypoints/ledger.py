"""The ledger function (auditors): entries, balances, trial balance, checkpoints, export."""

from __future__ import annotations

from holdfast.entrypoints.web import Api

api = Api("ledger", [])
