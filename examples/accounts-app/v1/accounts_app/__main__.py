"""``python -m accounts_app [--port N]``: serve on 127.0.0.1 (port 0 picks a free one).

Prints ``LISTENING <port>`` once the reporter is registered and the socket is bound.
"""

from __future__ import annotations

import argparse
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from .service import Service, database_url


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(prog="accounts_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--heartbeat", type=float, default=10.0, help="LiveReporter interval, seconds")
    args = parser.parse_args()
    service = Service(database_url(), heartbeat=args.heartbeat)
    service.start()  # registers, and on SIGTERM deregisters before the process ends
    try:
        with make_server(args.host, args.port, service, handler_class=QuietHandler) as server:
            sys.stdout.write(f"LISTENING {server.server_port}\n")
            sys.stdout.flush()
            server.serve_forever()
    finally:
        service.stop()


if __name__ == "__main__":
    main()
