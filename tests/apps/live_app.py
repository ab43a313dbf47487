"""A stand-in application: maps some columns and runs a LiveReporter until killed.

Usage: python -m tests.apps.live_app URL --app web --version 1.0 --maps public.users:id,name
       [--interval 0.2] [--mode main|thread|fork|chain] [--no-signals]

Prints one line per event on stdout, flushed, so the test can wait for it:
``READY <instance id> <pid>`` once registered (and ``CHILD <id> <pid>`` from a forked
child), ``WARNINGS <n> HANDLER <ours|default>`` in thread mode.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import warnings

import structlog
from sqlalchemy import Column, Integer, MetaData, Table, Text

from expandcontract import LiveReporter


def build_metadata(spec: list[str]) -> MetaData:
    metadata = MetaData()
    for item in spec:
        table_name, _, columns = item.partition(":")
        schema, _, name = table_name.rpartition(".")
        cols = [
            Column(c, Integer if c == "id" else Text, primary_key=(c == "id")) for c in columns.split(",")
        ]
        Table(name, metadata, *cols, schema=schema or None)
    return metadata


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def wait_registered(reporter: LiveReporter, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not reporter.registered and time.monotonic() < deadline:
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--app", default="web")
    parser.add_argument("--version", default="1.0")
    parser.add_argument("--maps", action="append", default=[])
    parser.add_argument("--uses", action="append", default=[], help="table:col,col without metadata")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--mode", choices=["main", "thread", "fork", "chain"], default="main")
    parser.add_argument("--no-signals", action="store_true")
    parser.add_argument(
        "--exit-after", type=float, default=None, help="return from main, never calling stop()"
    )
    args = parser.parse_args()

    # The application, not the library, configures logging: ours goes to stderr.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    uses = {}
    for item in args.uses:
        table, _, columns = item.partition(":")
        uses[table] = columns.split(",")
    reporter = LiveReporter(
        args.url,
        app=args.app,
        version=args.version,
        metadata=build_metadata(args.maps),
        uses=uses or None,
        interval=args.interval,
        handle_signals=not args.no_signals,
    )

    if args.mode == "chain":
        # The application's own SIGTERM handler, installed first: the reporter must chain to it.
        def graceful(signum: int, frame: object) -> None:
            say("APP-HANDLER")
            sys.exit(0)

        signal.signal(signal.SIGTERM, graceful)

    if args.mode == "thread":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            others = [
                LiveReporter(args.url, app=args.app, version=args.version, interval=args.interval)
                for _ in range(2)
            ]
            threads = [threading.Thread(target=r.start) for r in [reporter, *others]]
            for t in threads:
                t.start()
                t.join()
        ours = signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        relevant = [w for w in caught if "main thread" in str(w.message)]
        say(f"WARNINGS {len(relevant)} HANDLER {'ours' if ours else 'default'}")
        for other in others:
            other.stop()
    else:
        reporter.start()
    wait_registered(reporter)
    say(f"READY {reporter.id} {os.getpid()}")

    if args.mode == "fork":
        pid = os.fork()
        if pid == 0:
            wait_registered(reporter)
            say(f"CHILD {reporter.id} {os.getpid()}")
            while True:
                time.sleep(3600)
    if args.exit_after is not None:
        time.sleep(args.exit_after)
        return  # interpreter exit: the reporter's atexit hook deregisters
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
