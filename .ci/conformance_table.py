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
        f"conformance figures, PostgreSQL {server}: operations by old code (v1) and new code (v2) per workload "
        "(SQLAlchemy Core on AUTOCOMMIT / ORM sessions / child rows), errors, prepared-statement errors, "
        "lost writes, rows checked, max query wait during each phase"
    )
    print(
        f"{'operation':<16} {'v1 core/orm/child':>18} {'v2 core/orm/child':>18} {'errors':>6} {'prep.':>5} "
        f"{'lost':>4} {'rows':>5}  max wait s: expand/backfill/contract"
    )
    for r in sorted(rows, key=lambda r: r["operation"]):
        w = r["max_wait_s"]
        by = r.get("workloads", {})
        split = {
            v: "/".join(str(by.get(v, {}).get(k, 0)) for k in ("core", "orm", "child")) for v in ("1", "2")
        }
        print(
            f"{r['operation']:<16} {split['1']:>18} {split['2']:>18} {r['errors']:>6} "
            f"{r.get('prepared_errors', 0):>5} {r.get('lost_writes', 0):>4} {r['rows_checked']:>5}  "
            f"{w['expand']:.3f} / {w['backfill']:.3f} / {w['contract']:.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
