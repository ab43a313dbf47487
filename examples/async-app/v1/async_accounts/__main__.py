"""``python -m async_accounts [--port N]``: serve on 127.0.0.1 (port 0 picks a free one).

Prints ``LISTENING <port>`` once the reporter is registered and the socket is bound.
"""

from __future__ import annotations

import argparse
import asyncio

from .server import Server
from .service import Service, database_url


async def serve(host: str, port: int, heartbeat: float) -> None:
    # `async with`: astart() registers before the first request, astop() deregisters after the last.
    async with Service(database_url(), heartbeat=heartbeat) as service:
        await Server(service).serve(host, port)


def main() -> None:
    parser = argparse.ArgumentParser(prog="async_accounts")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="LiveReporter interval, seconds")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.heartbeat))


if __name__ == "__main__":
    main()
