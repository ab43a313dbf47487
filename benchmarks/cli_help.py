"""How fast `ecm --help` answers, against `alembic --help` in the same run.

Prints a table and writes benchmarks/results/cli_help.json. Target: ecm at most 0.3 s
wall (median) and no slower than alembic.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def measure(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=True)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_help.json"))
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    commands = {
        "ecm --help": [
            str(bindir / "ecm") if (bindir / "ecm").exists() else shutil.which("ecm") or "ecm",
            "--help",
        ],
        "alembic --help": [
            str(bindir / "alembic")
            if (bindir / "alembic").exists()
            else shutil.which("alembic") or "alembic",
            "--help",
        ],
    }
    results = {}
    print(f"{'command':<16} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, cmd in commands.items():
        t = measure(cmd, args.runs)
        results[name] = {
            "median_s": statistics.median(t),
            "min_s": min(t),
            "max_s": max(t),
            "runs": args.runs,
        }
        print(f"{name:<16} {statistics.median(t):>9.3f} {min(t):>7.3f} {max(t):>7.3f}")
    ecm, alembic = results["ecm --help"]["median_s"], results["alembic --help"]["median_s"]
    verdict = {"ecm_under_0_3s": ecm <= 0.3, "ecm_not_slower_than_alembic": ecm <= alembic}
    print(
        f"targets: ecm <= 0.3 s: {verdict['ecm_under_0_3s']}; ecm <= alembic: {verdict['ecm_not_slower_than_alembic']}"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"results": results, "targets": verdict}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
