"""Whole-process start-up of `ecm plan … --dry-run` against `alembic revision -m x`, same run.

Builds a throwaway stock Alembic project (`alembic init` in a temporary directory) whose
``sqlalchemy.url`` points at a fresh database ``ecm_bench_startup`` holding
``accounts(id bigint identity primary key, name text not null, email text)`` with an index on
``name``, then interleaves N runs of:

* ``alembic revision -m x`` (the file it writes is deleted after each run),
* ``ecm plan rename-column accounts name full_name --dry-run`` from the project directory with
  ``ECM_DATABASE_URL`` set, the way the test suite runs it (env.py is probed, the explicit URL is
  checked against it, the catalog is read),
* the same without ``ECM_DATABASE_URL`` (the database env.py connects to),
* ``ecm --help``,
* ``python -c pass``, the floor every Python process pays.

Each figure is the wall time of the whole process (spawn to exit); the median CPU time (user +
system) of each is shown too, steadier than wall time on a busy machine. Prints a table (median, min,
max per command, ratio of each median to `alembic revision`'s) and writes
benchmarks/results/startup.json. Target: `ecm plan … --dry-run` at most 1.0x `alembic revision`.

    python benchmarks/startup.py                # 7 interleaved runs
    python benchmarks/startup.py --runs 15 --importtime
    git archive REV expandcontract | tar -x -C /tmp/before
    python benchmarks/startup.py --baseline-tree /tmp/before --importtime   # before and after

``--importtime`` adds where the import time goes, by package (``-X importtime`` self times,
least of 5 runs), for `alembic revision`, `ecm plan` and its baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

DATABASE = "ecm_bench_startup"
HEADLINE = "ecm plan --dry-run"
BASELINE = "alembic revision -m x"
TARGET_RATIO = 1.0
RESULTS = Path(__file__).parent / "results" / "startup.json"


def _with_database(server: str, database: str) -> str:
    """The server URL with its database replaced."""
    info = psycopg.conninfo.conninfo_to_dict(server)
    info["dbname"] = database
    user = info.get("user") or ""
    password = f":{info['password']}" if info.get("password") else ""
    auth = f"{user}{password}@" if user else ""
    host = info.get("host") or "127.0.0.1"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{auth}{host}{port}/{database}"


def create_database(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    url = _with_database(server, DATABASE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE accounts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
            "name text NOT NULL, email text)"
        )
        conn.execute("CREATE INDEX accounts_name_idx ON accounts (name)")
        conn.execute(
            "INSERT INTO accounts (name, email) SELECT 'n' || g, 'e' || g FROM generate_series(1, 100) g"
        )
        conn.execute("ANALYZE accounts")
    return url


def drop_database(server: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))


def make_project(root: Path, url: str, alembic: str) -> None:
    subprocess.run([alembic, "init", "migrations"], cwd=root, check=True, capture_output=True)
    ini = root / "alembic.ini"
    driver_url = url.replace("postgresql://", "postgresql+psycopg://", 1).replace("%", "%%")
    lines = [
        f"sqlalchemy.url = {driver_url}" if line.startswith("sqlalchemy.url") else line
        for line in ini.read_text().splitlines()
    ]
    ini.write_text("\n".join(lines) + "\n")


def script(name: str) -> str:
    """A console script of this interpreter's environment."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{path} not found: install expandcontract into this environment")
    return str(path)


def commands(url: str, baseline_tree: str | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    ecm, alembic = script("ecm"), script("alembic")
    plan = [ecm, "plan", "rename-column", "accounts", "name", "full_name", "--dry-run"]
    table = {
        "python -c pass": ([sys.executable, "-c", "pass"], {}),
        BASELINE: ([alembic, "revision", "-m", "x"], {}),
        HEADLINE: (plan, {"ECM_DATABASE_URL": url}),
        "ecm plan --dry-run (env.py URL)": (plan, {}),
        "ecm --help": ([ecm, "--help"], {}),
    }
    if baseline_tree:
        # The same commands on another checkout of the package (e.g. `git archive` of an older
        # commit), found first on PYTHONPATH: before and after in one run, under the same load.
        old = {"PYTHONPATH": baseline_tree}
        table[f"{HEADLINE} [baseline]"] = (plan, {"ECM_DATABASE_URL": url, **old})
        table["ecm --help [baseline]"] = ([ecm, "--help"], old)
    return table


def clean_env() -> dict[str, str]:
    """The caller's environment without ECM_* settings, so that only what a row sets applies."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ECM_")}


def run_once(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def remove_revisions(root: Path) -> None:
    for path in (root / "migrations" / "versions").glob("*.py"):
        path.unlink()


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
#: Packages reported under the package that brings them (pydantic's own dependencies, typer's pydantic).
_GROUP_AS = {
    "pydantic_core": "pydantic",
    "annotated_types": "pydantic",
    "typing_inspection": "pydantic",
    "psycopg_binary": "psycopg",
}


def _package(module: str) -> str:
    """The group a module's import time counts for: expandcontract by sub-package, others by package."""
    parts = module.split(".")
    if parts[0] == "expandcontract":
        return ".".join(parts[:2])
    return _GROUP_AS.get(parts[0], parts[0])


def importtime(
    cmd: list[str], env: dict[str, str], cwd: Path
) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """One run under ``-X importtime``: (self ms per package, [(cumulative ms, module)] of the
    modules imported at the first two levels, slowest first)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd], cwd=cwd, env=env, capture_output=True, text=True
    )
    remove_revisions(cwd)
    packages: dict[str, float] = {}
    ranked = []
    for line in proc.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            own, cumulative, depth, name = int(m[1]) / 1000, int(m[2]) / 1000, len(m[3]) // 2, m[4]
            packages[_package(name)] = packages.get(_package(name), 0.0) + own
            if depth <= 1:
                ranked.append((cumulative, f"{'  ' * depth}{name}"))
    return packages, sorted(ranked, reverse=True)


def import_profile(
    table: dict[str, tuple[list[str], dict[str, str]]], names: list[str], env: dict[str, str], cwd: Path
) -> dict[str, dict[str, float]]:
    """Self ms per package of each command in ``names``: the least of 5 ``-X importtime`` runs
    (interleaved), which on a busy machine is the closest to what the import costs."""
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for _ in range(5):
        for name in names:
            cmd, extra = table[name]
            samples[name].append(importtime(cmd, {**env, **extra}, cwd)[0])
    profile = {}
    for name, runs in samples.items():
        packages = set().union(*runs)
        profile[name] = {p: round(min(r.get(p, 0.0) for r in runs), 1) for p in packages}
        profile[name]["TOTAL"] = round(min(sum(r.values()) for r in runs), 1)
    return profile


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("ECM_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="A PostgreSQL server URL; the benchmark creates and drops its own database there.",
    )
    parser.add_argument("--runs", type=int, default=7, help="Interleaved runs of each command.")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--keep", action="store_true", help="Keep the database and print the project dir.")
    parser.add_argument(
        "--importtime", action="store_true", help="Also print the slowest imports of one `ecm plan` run."
    )
    parser.add_argument(
        "--baseline-tree",
        metavar="DIR",
        help="A directory holding another version of the expandcontract package "
        "(`git archive REV expandcontract | tar -x -C DIR`): its `ecm` rows are measured too.",
    )
    args = parser.parse_args()

    url = create_database(args.server)
    tmp = tempfile.mkdtemp(prefix="ecm-bench-startup-")
    root = Path(tmp)
    try:
        make_project(root, url, script("alembic"))
        base_env = clean_env()
        table = commands(url, args.baseline_tree)
        for cmd, extra in table.values():  # warm the page cache and bytecode caches
            run_once(cmd, {**base_env, **extra}, root)
            remove_revisions(root)
        times: dict[str, list[float]] = {name: [] for name in table}
        cpu: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(args.runs):
            for name, (cmd, extra) in table.items():
                wall, used = run_once(cmd, {**base_env, **extra}, root)
                times[name].append(wall)
                cpu[name].append(used)
                remove_revisions(root)
        profile: dict[str, dict[str, float]] = {}
        offenders: list[tuple[float, str]] = []
        if args.importtime:
            names = [n for n in (BASELINE, HEADLINE, f"{HEADLINE} [baseline]") if n in table]
            profile = import_profile(table, names, base_env, root)
            cmd, extra = table[HEADLINE]
            offenders = importtime(cmd, {**base_env, **extra}, root)[1][:15]
    finally:
        if args.keep:
            print(f"project kept in {root}; database {DATABASE} kept", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(root)], check=False)
            drop_database(args.server)

    baseline = statistics.median(times[BASELINE])
    results = {}
    for name, t in times.items():
        med = statistics.median(t)
        results[name] = {
            "median_s": round(med, 4),
            "min_s": round(min(t), 4),
            "max_s": round(max(t), 4),
            "vs_alembic_revision": round(med / baseline, 3),
            "cpu_median_s": round(statistics.median(cpu[name]), 4),
            "runs_s": [round(x, 4) for x in t],
        }
    ratio = results[HEADLINE]["vs_alembic_revision"]
    load = os.getloadavg()
    print(
        f"whole-process wall time, median of {args.runs} interleaved runs "
        f"(Python {platform.python_version()}, {os.cpu_count()} CPUs, load {load[0]:.2f})\n"
    )
    print(
        f"| {'command':<36} | {'median s':>8} | {'min s':>6} | {'max s':>6} | {'vs alembic':>10} | {'CPU s':>6} |"
    )
    print(f"|{'-' * 38}|{'-' * 9}:|{'-' * 7}:|{'-' * 7}:|{'-' * 11}:|{'-' * 7}:|")
    for name, r in results.items():
        print(
            f"| {name:<36} | {r['median_s']:>8.3f} | {r['min_s']:>6.3f} | {r['max_s']:>6.3f} "
            f"| {r['vs_alembic_revision']:>9.2f}x | {r['cpu_median_s']:>6.3f} |"
        )
    met = ratio <= TARGET_RATIO
    print(
        f"\ntarget `{HEADLINE}` <= {TARGET_RATIO:.1f}x `{BASELINE}`: {ratio:.2f}x, {'met' if met else 'MISSED'}"
    )
    if profile:
        names = list(profile)
        print("\nimport time by package (-X importtime, self ms, least of 5 runs; >= 4 ms somewhere):\n")
        print(f"| {'package':<28} | " + " | ".join(f"{n:>28}" for n in names) + " |")
        print(f"|{'-' * 30}|" + "|".join(f"{'-' * 29}:" for _ in names) + "|")
        order = sorted(
            set().union(*profile.values()), key=lambda p: -max(profile[n].get(p, 0) for n in names)
        )
        for package in order:
            values = [profile[n].get(package, 0.0) for n in names]
            if max(values) >= 4:
                print(f"| {package:<28} | " + " | ".join(f"{v:>28.1f}" for v in values) + " |")
    if offenders:
        print(f"\nslowest imports of one `{HEADLINE}` run (-X importtime, cumulative ms):")
        for ms, name in offenders:
            print(f"  {ms:8.1f}  {name}")
    document = {
        "measured": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in load],
        "runs": args.runs,
        "results": results,
        "target": {"ratio": TARGET_RATIO, "measured": ratio, "met": met},
        "import_self_ms_by_package": profile,
        "slowest_imports_cumulative_ms": [[round(ms, 1), name.strip()] for ms, name in offenders],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
