"""``ecm backfill`` and ``ecm verify``: run a plan's backfill outside ``ecm upgrade``.

Long backfills belong in their own job (a Kubernetes Job with several pods, say):
every process started on the same plan shares its chunks through the control schema,
so starting more of them is how to add workers across hosts.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import Common, command


def register(app: typer.Typer) -> None:
    @command(app, "backfill")
    def backfill(
        common: Common,
        plan: Annotated[str, typer.Argument(help="Plan id (see `ecm status`).")],
        workers: Annotated[int, typer.Option("--workers", help="Worker threads in this process.")] = 1,
        batch_time: Annotated[
            float, typer.Option("--batch-time", help="Target duration of one batch, in ms.")
        ] = 100.0,
        max_batch: Annotated[int, typer.Option("--max-batch", help="Largest batch, in rows.")] = 200_000,
        min_batch: Annotated[int, typer.Option("--min-batch", help="Smallest batch, in rows.")] = 100,
        start_batch: Annotated[int, typer.Option("--start-batch", help="First batch, in rows.")] = 1_000,
        sleep: Annotated[float, typer.Option("--sleep", help="Fixed pause after every batch, in ms.")] = 0.0,
        chunks: Annotated[
            int | None,
            typer.Option(
                "--chunks",
                help="Split the key space into N chunks that workers (threads, processes, hosts) claim. "
                "Fixed by the first run on a plan. Default: 1 for one worker on a small table, "
                "else 4 per worker and one per million rows.",
            ),
        ] = None,
        lease_seconds: Annotated[
            float,
            typer.Option(
                "--lease-seconds", help="A chunk whose worker stays silent this long is taken over."
            ),
        ] = 60.0,
        lock_timeout: Annotated[
            int,
            typer.Option(
                "--lock-timeout", help="A batch waiting on locks longer than this (ms) pauses and retries."
            ),
        ] = 1_000,
        max_replication_lag: Annotated[
            float,
            typer.Option("--max-replication-lag", help="Pause while a standby lags more (s); 0 disables."),
        ] = 30.0,
        autovacuum: Annotated[
            str,
            typer.Option(
                "--autovacuum", help="Pause while autovacuum works on the table: wraparound, any or off."
            ),
        ] = "wraparound",
        lock_waiters: Annotated[
            bool,
            typer.Option(
                "--lock-waiters/--no-lock-waiters",
                help="Pause while another session waits for a lock on the table.",
            ),
        ] = True,
        pause: Annotated[
            float, typer.Option("--pause", help="How long to wait before re-checking health, in s.")
        ] = 5.0,
        probe: Annotated[
            list[str] | None,
            typer.Option("--probe", help="Extra health probe, package.module:callable (repeatable)."),
        ] = None,
        restart: Annotated[
            bool, typer.Option("--restart", help="Forget checkpoints and start from the beginning.")
        ] = False,
        progress: Annotated[
            bool | None,
            typer.Option(
                "--progress/--no-progress",
                help="Progress bar on stderr (default: when stderr is a terminal; else log events).",
            ),
        ] = None,
    ) -> None:
        """Run a plan's backfill: resumable, throttled, parallel; resumes from its checkpoints."""
        import signal

        from ..backfill.engine import BackfillOptions, load_extra_specs, load_spec, run_backfill
        from ..backfill.health import AllProbes, HealthProbe, load_probe

        options = BackfillOptions(
            workers=workers,
            chunks=chunks,
            batch_time_ms=batch_time,
            max_batch=max_batch,
            min_batch=min(min_batch, max_batch),
            start_batch=start_batch,
            sleep_ms=sleep,
            lease_seconds=lease_seconds,
            lock_timeout_ms=lock_timeout,
            max_replication_lag_s=max_replication_lag or None,
            autovacuum=autovacuum,
            pause_on_lock_waiters=lock_waiters,
            pause_seconds=pause,
            restart=restart,
        )
        options.validate()
        probes = [load_probe(ref) for ref in probe or []]
        extra: HealthProbe | None = None
        if probes:
            extra = probes[0] if len(probes) == 1 else AllProbes(probes)

        def _terminate(signum: int, frame: Any) -> None:
            # Kubernetes stops a Job's pod with SIGTERM: finish the batch, hand the chunk back.
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _terminate)
        engine = common.engine()
        spec = load_spec(engine, plan)
        for other in load_extra_specs(engine, plan):
            # The plan's other tables first (each resumes from its own checkpoints).
            done = run_backfill(engine, other, options, probe=extra, progress=progress)
            common.say(
                f"backfill of {other.schema}.{other.table} for {plan} {done.status}: {done.rows_done:,} rows"
            )
            if done.status not in ("complete", "already_complete"):
                from ..errors import OperationalError

                raise OperationalError(
                    f"backfill of {plan} is {done.status}; run `ecm backfill {plan}` again"
                )
        result = run_backfill(engine, spec, options, probe=extra, progress=progress)
        common.emit(result.to_json())
        if result.status == "already_complete":
            common.say(f"backfill of {plan} already complete ({result.rows_total:,} rows)")
            return
        for r in result.resumed:
            common.say(
                f"resumed chunk {r['chunk']} after key {r['last_key']} ({r['rows_done']:,} rows done before)"
            )
        if result.reconnects:
            longest = max(float(r["outage_s"]) for r in result.reconnects)
            common.say(
                f"reconnected {len(result.reconnects)} time(s) after losing the server "
                f"(longest wait {longest:.1f} s); resumed from the checkpoints"
            )
        common.say(
            f"backfill of {plan} {result.status}: {result.rows_done:,} rows in this run "
            f"({result.rows_updated:,} changed), {result.elapsed_s:.1f} s, {result.rows_per_s:,.0f} rows/s; "
            f"{result.rows_total:,} rows in all"
        )
        if result.status != "complete":
            from ..errors import OperationalError

            raise OperationalError(f"backfill of {plan} is {result.status}; run `ecm backfill {plan}` again")

    @command(app, "verify")
    def verify(
        common: Common,
        plan: Annotated[str, typer.Argument(help="Plan id (see `ecm status`).")],
        batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per read batch.")] = 50_000,
        show: Annotated[int, typer.Option("--show", help="How many mismatching keys to print.")] = 10,
    ) -> None:
        """Check that no row has the new shape out of step with the old (exit 1 if any does)."""
        from ..backfill.engine import load_extra_specs, load_spec
        from ..backfill.engine import verify as run_verify
        from ..errors import OperationalError

        engine = common.engine()
        spec = load_spec(engine, plan)
        result = run_verify(engine, spec, batch_size=batch_size, show=show)
        for other in load_extra_specs(engine, plan):  # every table of the plan, until one is out of step
            if not result.ok:
                break
            spec, result = other, run_verify(engine, other, batch_size=batch_size, show=show)
        common.emit(result.to_json())
        if result.ok:
            common.say(f"verified {plan}: {result.rows_checked:,} rows in step")
            return
        what = spec.mismatch_label or "are out of step"
        common.say(
            f"{result.mismatch_count:,} of {result.rows_checked:,} rows {what}; first keys:", markup=False
        )
        for key in result.mismatches:
            common.say("  " + ", ".join(f"{k}={v}" for k, v in key.items()), markup=False)
        from ..backfill.spec import shown_keys

        first = result.mismatches[:5]
        raise OperationalError(
            f"verify {plan}: "
            + (
                spec.describe_mismatches(result.mismatch_count, first, fix=False)
                if spec.mismatch_label
                else f"{result.mismatch_count} rows out of step (first keys: {shown_keys(first)})"
            )
        )
