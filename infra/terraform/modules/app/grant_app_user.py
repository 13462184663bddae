"""Give each function its own, unprivileged database login (run by the migration Job).

The schema belongs to the owner user that runs `holdfast migrate` (on CockroachDB Cloud an
admin). The functions must not be that user. Migration 0005 makes one NOLOGIN role per
function (`holdfast_accounts`, `holdfast_transfers`, `holdfast_ledger`, `holdfast_relay`),
each granted only the tables that function touches; no role may update or delete the
ledger's history. That guard only holds for a login that has nothing more than its role. So,
after the migration and as the owner, this script makes sure the login named in each
function's URL exists with that URL's password and is a member of its function's role.
Running it again changes nothing but the passwords (rotation).

Environment:
- HOLDFAST_MIGRATION_DATABASE_URL: the owner's URL;
- HOLDFAST_DATABASE_URL_ACCOUNTS, _TRANSFERS, _LEDGER, _RELAY: each function's URL;
- HOLDFAST_DATABASE_URL (optional, expand/contract): the shared login of releases before
  0005, kept a member of `holdfast_functions` while revisions of such a release may still
  start; drop it from the Secret in the contract release.

Only SQL that both PostgreSQL and CockroachDB run.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa

from holdfast.adapters.database import sqlalchemy_url

FUNCTION_ROLES = {
    "accounts": "holdfast_accounts",
    "transfers": "holdfast_transfers",
    "ledger": "holdfast_ledger",
    "relay": "holdfast_relay",
}
LEGACY_ROLE = "holdfast_functions"
ROLES = frozenset({*FUNCTION_ROLES.values(), LEGACY_ROLE})
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# The generated passwords are letters and digits: nothing to escape in a SQL literal.
PASSWORD = re.compile(r"^[A-Za-z0-9]{16,128}$")


def login_of(url: str) -> tuple[str, str, str]:
    """User, password and database named in a database URL, checked to be safe in SQL."""
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    database = parts.path.lstrip("/")
    if not IDENTIFIER.match(user):
        raise ValueError("each function's user must be a lowercase SQL identifier")
    if not PASSWORD.match(password):
        raise ValueError("each function's password must be 16-128 letters and digits")
    if not IDENTIFIER.match(database):
        raise ValueError("the database name must be a lowercase SQL identifier")
    return user, password, database


def logins_from(environment: Mapping[str, str]) -> dict[str, str]:
    """Role -> URL of the login that must hold it, from the Job's environment."""
    wanted: dict[str, str] = {}
    for function, role in FUNCTION_ROLES.items():
        url = environment.get(f"HOLDFAST_DATABASE_URL_{function.upper()}")
        if not url:
            raise ValueError(f"HOLDFAST_DATABASE_URL_{function.upper()} is not set")
        wanted[role] = url
    legacy = environment.get("HOLDFAST_DATABASE_URL")
    if legacy:
        wanted[LEGACY_ROLE] = legacy
    return wanted


def check_distinct(owner: str | None, users: Mapping[str, str]) -> None:
    """One login per role, none of them the owner or a role itself."""
    seen: dict[str, str] = {}
    for role, user in users.items():
        if user == owner:
            raise ValueError("a function must not log in as the schema's owner")
        if user in ROLES:
            raise ValueError(f"{user} is a role, not a login: name the login differently")
        if user in seen:
            raise ValueError(f"{seen[user]} and {role} must not share the login {user}")
        seen[user] = role


def grant(owner_url: str, logins: Mapping[str, str]) -> dict[str, str]:
    """Create or update each login and make it a member of its role; role -> user."""
    parsed = {role: login_of(url) for role, url in logins.items()}
    users = {role: user for role, (user, _, _) in parsed.items()}
    check_distinct(urlsplit(owner_url).username, users)
    engine = sa.create_engine(sqlalchemy_url(owner_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for role, (user, password, database) in parsed.items():
                exists = connection.execute(
                    sa.text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :name"),
                    {"name": user},
                ).scalar()
                verb = "ALTER" if exists else "CREATE"
                connection.execute(sa.text(f"{verb} USER {user} WITH PASSWORD '{password}'"))
                connection.execute(sa.text(f"GRANT {role} TO {user}"))
                connection.execute(sa.text(f"GRANT CONNECT ON DATABASE {database} TO {user}"))
    finally:
        engine.dispose()
    return users


def main() -> None:
    granted = grant(os.environ["HOLDFAST_MIGRATION_DATABASE_URL"], logins_from(os.environ))
    for role, user in granted.items():
        sys.stdout.write(f"{user} logs in with the {role} role only\n")


if __name__ == "__main__":
    main()
