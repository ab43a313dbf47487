"""What the demo proves, in numbers: requests, errors and the slowest query, per phase and version.

The application processes count under the phase they were told; this module folds
their per-process counters together so that one row says what a phase cost the
application (a slow query during the expand would show there, not in an average).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    into["requests"] += int(part.get("requests", 0))
    into["errors"] += int(part.get("errors", 0))
    into["max_wait_ms"] = max(into["max_wait_ms"], float(part.get("max_wait_ms", 0.0)))


def _empty() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "max_wait_ms": 0.0}


def summarize(
    timeline: list[dict[str, Any]], steps: list[dict[str, Any]], stats: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The summary part of the ``--json`` document (phases, versions, errors_total)."""
    phases: list[dict[str, Any]] = []
    for entry in timeline:
        versions: dict[str, Any] = {}
        for version, processes in sorted(stats.items()):
            total = _empty()
            seen = False
            for proc in processes:
                part = (proc.get("phases") or {}).get(entry["name"])
                if part:
                    seen = True
                    _merge(total, part)
            versions[version] = total if seen else None
        phases.append(
            {
                "name": entry["name"],
                "label": entry["label"],
                "duration_s": entry.get("duration_s"),
                "commands": [s["command"] for s in steps if s.get("phase") == entry["name"]],
                "versions": versions,
            }
        )
    by_version: dict[str, Any] = {}
    errors_total = 0
    samples: list[str] = []
    for version, processes in sorted(stats.items()):
        total = _empty()
        failed = 0
        for proc in processes:
            for part in (proc.get("phases") or {}).values():
                _merge(total, part)
            samples.extend(f"v{version}: {s}" for s in proc.get("error_samples") or [])
            if proc.get("exit_code") != 0 or proc.get("missing"):
                failed += 1
        by_version[version] = {
            **total,
            "processes": len(processes),
            "pids": [p.get("pid") for p in processes],
            "exit_codes": [p.get("exit_code") for p in processes],
            "deregistered": all(bool(p.get("deregistered")) for p in processes),
            "sigterm_to_exit_s": max((p.get("sigterm_to_exit_s") or 0.0) for p in processes)
            if processes
            else None,
            "process_failures": failed,
        }
        errors_total += total["errors"] + failed
    return {
        "phases": phases,
        "versions": by_version,
        "steps": steps,
        "errors_total": errors_total,
        "error_samples": samples[:10],
    }


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def render(console: Console, doc: dict[str, Any]) -> None:
    """The Rich table the human run ends with."""
    from rich import box
    from rich.table import Table

    versions = sorted(doc.get("versions") or {})
    table = Table(
        title=f"ecm demo: rename accounts.name -> full_name, {doc.get('rows', 0):,} rows",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    table.add_column("phase", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for v in versions:
        table.add_column(f"v{v}\nrequests", justify="right", no_wrap=True)
        table.add_column(f"v{v} max\nwait", justify="right", no_wrap=True)
    table.add_column("errors", justify="right", no_wrap=True)
    for phase in doc.get("phases") or []:
        cells = [phase["label"], f"{phase.get('duration_s') or 0:.1f} s"]
        errors = 0
        for v in versions:
            part = (phase.get("versions") or {}).get(v)
            if part is None:
                cells += ["-", "-"]
            else:
                cells += [f"{part['requests']:,}", _ms(part["max_wait_ms"])]
                errors += part["errors"]
        cells.append(f"[red]{errors}[/]" if errors else "0")
        table.add_row(*cells)
    totals = ["[bold]total[/]", f"{doc.get('elapsed_s') or 0:.1f} s"]
    for v in versions:
        part = doc["versions"][v]
        totals += [f"[bold]{part['requests']:,}[/]", _ms(part["max_wait_ms"])]
    errors_total = int(doc.get("errors_total") or 0)
    totals.append(f"[bold red]{errors_total}[/]" if errors_total else "[bold green]0[/]")
    table.add_section()
    table.add_row(*totals)
    console.print(table)
