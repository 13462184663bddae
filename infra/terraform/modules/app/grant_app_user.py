"""Give the functions their own, unprivileged database login (run by the migration Job).

The schema belongs to the owner user that runs `holdfast migrate` (on CockroachDB Cloud an
admin). The functions must not be that user: migration 0002 makes a NOLOGIN role,
`holdfast_functions`, that may insert into the ledger's history but never update or delete
it, and that guard only holds for a login that has nothing more than that role. So, after
the migration and as the owner, this script makes sure the login named in the functions'
HOLDFAST_DATABASE_URL exists with that URL's password, and is a member of the role. Running
it again changes nothing but the password (rotation).

Environment: HOLDFAST_MIGRATION_DATABASE_URL (the owner's URL) and HOLDFAST_DATABASE_URL (the
functions' URL). Only SQL that both PostgreSQL and CockroachDB run.
"""

from __future__ import annotations

import os
import re
import sys
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa

from holdfast.adapters.database import sqlalchemy_url

ROLE = "holdfast_functions"
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# The generated passwords are letters and digits: nothing to escape in a SQL literal.
PASSWORD = re.compile(r"^[A-Za-z0-9]{16,128}$")


def login_of(url: str) -> tuple[str, str, str]:
    """User, password and database named in a database URL, checked to be safe in SQL."""
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    database = parts.path.lstrip("/")
    if not IDENTIFIER.match(user):
        raise ValueError("the functions' user must be a lowercase SQL identifier")
    if not PASSWORD.match(password):
        raise ValueError("the functions' password must be 16-128 letters and digits")
    if not IDENTIFIER.match(database):
        raise ValueError("the database name must be a lowercase SQL identifier")
    return user, password, database


def grant(owner_url: str, functions_url: str) -> str:
    user, password, database = login_of(functions_url)
    owner = urlsplit(owner_url).username
    if user == owner:
        raise ValueError("the functions must not log in as the schema's owner")
    engine = sa.create_engine(sqlalchemy_url(owner_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            exists = connection.execute(
                sa.text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :name"),
                {"name": user},
            ).scalar()
            verb = "ALTER" if exists else "CREATE"
            connection.execute(sa.text(f"{verb} USER {user} WITH PASSWORD '{password}'"))
            connection.execute(sa.text(f"GRANT {ROLE} TO {user}"))
            connection.execute(sa.text(f"GRANT CONNECT ON DATABASE {database} TO {user}"))
    finally:
        engine.dispose()
    return user


def main() -> None:
    user = grant(os.environ["HOLDFAST_MIGRATION_DATABASE_URL"], os.environ["HOLDFAST_DATABASE_URL"])
    sys.stdout.write(f"{user} logs in with the {ROLE} role only\n")


if __name__ == "__main__":
    main()
