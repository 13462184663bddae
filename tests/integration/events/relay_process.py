"""A relay in a process of its own, for the crash test: `relay_process.py DB_URL SINK LEASE_S`.

The test kills it with SIGKILL in the middle of a batch."""

import asyncio
import sys

from holdfast import bootstrap
from holdfast.adapters.relay import HttpPublisher
from holdfast.config import Settings
from holdfast.services.relay import Policy, Relay


def main() -> None:
    database_url, sink, lease_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    settings = Settings.from_env({"HOLDFAST_DATABASE_URL": database_url})
    db = bootstrap.database(settings, application_name="doomed-relay", cipher=None, pool_size=2)
    policy = Policy(
        lease_s=lease_s, send_timeout_s=lease_s / 2, clock_margin_s=0.1, idle_poll_s=0.01
    )
    asyncio.run(Relay(db, HttpPublisher(sink), policy, name="doomed").run())


if __name__ == "__main__":
    main()
