"""Print the conformance figures a test pass wrote (ECM_CONFORMANCE_REPORT, JSON lines) as a table."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(path: str, server: str) -> None:
    file = Path(path)
    if not file.is_file():
        print(f"(no conformance figures at {path})")
        return
    rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    print(
        f"conformance figures, PostgreSQL {server} (ops by old code v1 / new code v2, max query wait during each phase)"
    )
    print(
        f"{'operation':<16} {'v1 ops':>7} {'v2 ops':>7} {'errors':>6} {'prep.':>5} {'lost':>4} {'rows':>5}  max wait s: expand/backfill/contract"
    )
    for r in sorted(rows, key=lambda r: r["operation"]):
        w = r["max_wait_s"]
        print(
            f"{r['operation']:<16} {r['ops'].get('1', 0):>7} {r['ops'].get('2', 0):>7} {r['errors']:>6} "
            f"{r.get('prepared_errors', 0):>5} {r.get('lost_writes', 0):>4} {r['rows_checked']:>5}  "
            f"{w['expand']:.3f} / {w['backfill']:.3f} / {w['contract']:.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
