"""What a type swap under the same name does to running code's prepared statements, with and without
the reporter's pause.

Runs the conformance suite's change-type traffic scenario (integer -> bigint under the same name:
v1 and v2 as separate processes, SQLAlchemy Core on an AUTOCOMMIT connection and ORM sessions that
commit, psycopg defaults, each under LiveReporter) twice per repeat, interleaved:

- ``engine``: LiveReporter(engine) as the docs say; the contract waits for each instance to
  pause its prepared statements, then swaps;
- ``url``: LiveReporter(url), which cannot pause anything; the contract is forced past its
  refusal (``--force-contract``), as an application without the integration would experience it.

Prints a table (errors by statement, operations) and writes JSON. Needs a PostgreSQL DSN in
``ECM_TEST_DATABASE_URL`` (a superuser: each run creates its own database), run from the
repository root::

    python benchmarks/prepared_swap.py --repeat 3
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conformance.cases import CASES
from tests.conformance.harness import Scenario

RESULTS = Path(__file__).with_name("results")


def fresh_database(admin_url: str) -> str:
    name = f"ecm_bench_swap_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _url(admin_url, name)


def _url(admin_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(admin_url: str, mode: str) -> dict[str, Any]:
    url = fresh_database(admin_url)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s = Scenario(CASES["change-type"], Path(tmp), url)
            s.reporter_bind = mode
            traffic = s.traffic()
            by_statement: collections.Counter[str] = collections.Counter()
            kinds: set[str] = set()
            for version, result in traffic.results.items():
                for label, n in result.get("errors_by_label", {}).items():
                    by_statement[f"v{version} {label}"] += n
                for e in result["errors"]:  # "v2 core read: OperationalError: cached plan must not …"
                    kinds.add(e.split(": ", 2)[-1])
            return {
                "mode": mode,
                "errors": traffic.error_count(),
                "errors_by_statement": dict(by_statement),
                "error_messages": sorted(kinds),
                "ops": {v: traffic.ops(v) for v in traffic.results},
                "contract_s": round(
                    next((end - start for name, start, end in traffic.phases if name == "contract"), 0.0), 2
                ),
            }
    finally:
        drop_database(admin_url, url)


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "prepared_swap.json")
    args = parser.parse_args()
    admin = os.environ.get("ECM_TEST_DATABASE_URL")
    if not admin:
        raise SystemExit("set ECM_TEST_DATABASE_URL to a PostgreSQL DSN (superuser)")
    runs: list[dict[str, Any]] = []
    for i in range(args.repeat):
        for mode in ("engine", "url") if i % 2 == 0 else ("url", "engine"):
            runs.append(run(admin, mode))
            print(json.dumps(runs[-1]), file=sys.stderr)
    print(
        "| reporter | runs | errors (median) | errors per run | v1 ops | v2 ops | contract s (median) | messages |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---|")
    for mode in ("engine", "url"):
        mine = [r for r in runs if r["mode"] == mode]
        messages = sorted({m for r in mine for m in r["error_messages"]})
        by: collections.Counter[str] = collections.Counter()
        for r in mine:
            by.update(r["errors_by_statement"])
        print(
            f"| LiveReporter({mode}) | {len(mine)} | {statistics.median(r['errors'] for r in mine):g} | "
            f"{', '.join(str(r['errors']) for r in mine)} | "
            f"{statistics.median(r['ops'].get('1', 0) for r in mine):g} | "
            f"{statistics.median(r['ops'].get('2', 0) for r in mine):g} | "
            f"{statistics.median(r['contract_s'] for r in mine):g} | {'; '.join(messages) or '-'} |"
        )
        if by:
            print(
                f"|  | errors by statement (all runs): {', '.join(f'{k} {v}' for k, v in sorted(by.items()))} |||||||"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
