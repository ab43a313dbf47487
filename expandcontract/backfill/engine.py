"""The backfill engine: key-range batches, adaptive size, checkpoints, throttling, leases.

Why it looks like this (numbers in ``docs/backfill.md`` and ``benchmarks/backfill.py``):

* **Key ranges, not OFFSET, not ``LIMIT`` subqueries.** Each batch finds its upper key
  with an index-only scan that starts at the last key done, then runs one UPDATE over
  exactly that range, so batch cost does not grow with the table.
* **The trigger's fast path.** The dual-write trigger's ``WHEN`` clause is false while
  ``ecm.backfill`` is ``on``; every batch sets it locally and writes the new side itself
  with the spec's ``set_sql``, which saves one PL/pgSQL call per row. ``pending_sql`` is
  in every WHERE, and PostgreSQL re-checks the WHERE on the newest row version when a
  concurrent writer got there first, so a value the trigger wrote is never overwritten.
* **Checkpoint in the batch's own transaction**, committed with
  ``synchronous_commit = off``: a crash loses batch and checkpoint together and the
  batch is redone. The completion record is committed synchronously.
* **Chunks under leases** in ``<control>.backfill_checkpoints``: a claim is one short
  UPDATE … ``FOR UPDATE SKIP LOCKED``; every batch renews the lease in the same
  transaction and only commits if this worker still owns the chunk, so a chunk is
  finished exactly once however many threads, processes or hosts work on the plan. A
  chunk whose holder's backend is gone (its process was killed) or whose lease expired
  is taken over.
* **Riding through a restart.** A connection lost to a restart or failover (``reconnect.py``)
  is replaced with bounded backoff; before writing again a worker re-takes the plan's
  advisory lock and its chunk's lease and resumes from the chunk's checkpoint, so at most
  the batch that was in flight is done again.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ..errors import BadInput, OperationalError
from ..log import get_logger
from ..settings import control_schema
from ..sql.quoting import literal, qualified
from .health import AllProbes, DatabaseProbe, HealthProbe, ProbeContext
from .indexes import build_after_copy
from .keys import Key, KeyRanges, PageRanges
from .progress import Reporter
from .reconnect import Link, connection_lost, reconnect_timeout
from .spec import TRIGGER_SKIP_SETTING, BackfillSpec

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import Engine

log = get_logger("expandcontract.backfill")

#: SQLSTATEs after which a batch is simply retried smaller: lock_not_available
#: (lock_timeout), query_canceled (statement_timeout), deadlock, serialization failure.
RETRYABLE = {"55P03", "57014", "40P01", "40001"}

_T = TypeVar("_T")


class _Retry(Enum):
    """Sentinel: the batch failed retryably and the retry policy says try again."""

    RETRY = "retry"


RETRY: Final = _Retry.RETRY


@dataclass
class BackfillOptions:
    """Knobs for one run. Defaults suit an OLTP primary; every one is a CLI option too."""

    workers: int = 1
    #: Chunks the key space is split into (shared by every process working on the plan).
    #: Default: 1 for one worker on a small table, else 4 per worker and one per million rows.
    chunks: int | None = None
    batch_time_ms: float = 100.0
    min_batch: int = 100
    max_batch: int = 200_000
    start_batch: int = 1_000
    #: Largest growth per batch; GitLab's batched migrations use the same 1.2 cap.
    growth: float = 1.2
    sleep_ms: float = 0.0
    lease_seconds: float = 60.0
    #: A batch waiting longer than this for a row or table lock gives up, pauses and retries smaller.
    lock_timeout_ms: int = 1_000
    #: Statement timeout per batch; default half the lease, so no batch outlives its lease.
    statement_timeout_ms: int | None = None
    max_replication_lag_s: float | None = 30.0
    autovacuum: str = "wraparound"
    pause_on_lock_waiters: bool = True
    pause_seconds: float = 5.0
    probe_interval_s: float = 1.0
    progress_interval_s: float = 5.0
    synchronous_commit_off: bool = True
    #: Forget existing checkpoints and start over (after a downgrade, say).
    restart: bool = False
    #: Give up after this many retried batches in a row.
    max_retries: int = 20

    def validate(self) -> None:
        if self.workers < 1:
            raise BadInput("--workers must be at least 1")
        if self.chunks is not None and self.chunks < 1:
            raise BadInput("--chunks must be at least 1")
        if self.batch_time_ms <= 0:
            raise BadInput("--batch-time must be positive")
        if not 1 <= self.min_batch <= self.max_batch:
            raise BadInput(f"batch bounds must satisfy 1 <= min ({self.min_batch}) <= max ({self.max_batch})")
        if self.sleep_ms < 0 or self.lease_seconds <= 0 or self.pause_seconds < 0:
            raise BadInput("--sleep, --lease-seconds and --pause must not be negative")
        if self.growth < 1.0:
            raise BadInput("growth must be at least 1.0")


@dataclass
class BackfillResult:
    plan_id: str
    status: str  # complete | already_complete | interrupted | incomplete
    rows_done: int = 0  # rows this run covered
    rows_updated: int = 0  # rows this run actually changed (others were already in step)
    rows_total: int = 0  # rows covered by every run and worker, from the checkpoints
    batches: int = 0
    elapsed_s: float = 0.0
    rows_per_s: float = 0.0
    workers: int = 1
    chunks: int = 0
    chunks_finished: list[int] = field(default_factory=list)
    resumed: list[dict[str, Any]] = field(default_factory=list)
    takeovers: list[dict[str, Any]] = field(default_factory=list)
    pauses: list[str] = field(default_factory=list)
    retries: int = 0
    #: Connections a worker lost and got back (restart, failover): worker, outage_s, chunk.
    reconnects: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds building the new column's indexes after the copy (``BackfillSpec.indexes``).
    index_build_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyResult:
    plan_id: str
    ok: bool
    rows_checked: int
    mismatch_count: int
    mismatches: list[dict[str, str]]
    elapsed_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class BatchSizer:
    """Aims each batch at a target duration: grows at most ``growth`` times per batch, shrinks at once.

    A slow batch (lock waits, a cold cache, a busy disk) shrinks the next one in
    proportion, at most to a fifth, so the application's lock waits stay near the target.
    """

    def __init__(self, target_s: float, lo: int, hi: int, start: int, growth: float = 1.2) -> None:
        self.target_s, self.lo, self.hi, self.growth = target_s, lo, hi, growth
        self.size = min(max(start, lo), hi)

    def observe(self, duration_s: float, rows: int | None = None) -> int:
        if rows is not None and rows < self.size:
            return self.size  # a short tail batch says nothing about the pace
        ratio = self.target_s / duration_s if duration_s > 0 else self.growth
        factor = min(self.growth, ratio) if ratio >= 1 else max(0.2, ratio)
        self.size = int(min(max(self.size * factor, self.lo), self.hi))
        return self.size

    def shrink(self) -> int:
        self.size = max(self.lo, self.size // 4)
        return self.size


# --------------------------------------------------------------------------- connection


def _connect(engine: Engine, name: str) -> psycopg.Connection[Any]:
    """A psycopg connection of its own (out of the pool): autocommit, our transactions only."""
    raw = engine.raw_connection()
    conn: psycopg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
    raw.detach()
    if conn.info.transaction_status != 0:  # pool pre-ping may have opened one
        conn.rollback()
    conn.autocommit = True
    conn.execute("SELECT set_config('application_name', %s, false)", [name[:63]])
    return conn


def _control(table: str) -> str:
    return qualified(control_schema(), table)


def _plan_lock(conn: psycopg.Connection[Any], plan_id: str) -> None:
    """The plan's transaction advisory lock, under which its checkpoints are created or reset."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ["expandcontract:backfill:" + plan_id]
    )


def _dump_key(key: Key | None) -> str | None:
    return None if key is None else json.dumps(list(key))


def _load_key(value: Any) -> Key | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return tuple(str(v) for v in value)


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Target:
    """The table as the engine sees it: resolved key types, oid and size."""

    spec: BackfillSpec
    oid: int
    key_types: tuple[str, ...]
    reltuples: int
    relpages: int

    @property
    def ctid(self) -> bool:
        return self.spec.key_kind == "ctid"

    @property
    def ranges(self) -> KeyRanges:
        return KeyRanges.for_spec(self.spec, self.key_types)

    @property
    def pages(self) -> PageRanges:
        return PageRanges.for_spec(self.spec)

    @property
    def rows_estimate(self) -> int:
        return self.spec.rows_estimate or self.reltuples

    @property
    def rows_per_page(self) -> float:
        if self.relpages > 0 and self.reltuples > 0:
            return max(1.0, self.reltuples / self.relpages)
        return 50.0


def resolve(conn: psycopg.Connection[Any], spec: BackfillSpec) -> Target:
    if spec.key_kind not in ("pk", "unique", "ctid"):
        raise BadInput(f"plan {spec.plan_id}: unknown key kind {spec.key_kind!r}")
    if spec.key_kind != "ctid" and not spec.key:
        raise BadInput(f"plan {spec.plan_id}: a {spec.key_kind} backfill needs key columns")
    name = qualified(spec.schema, spec.table)
    row = conn.execute(
        "SELECT c.oid::int8, greatest(c.reltuples, 0)::int8, c.relpages::int8 FROM pg_class c "
        "WHERE c.oid = to_regclass(%s)",
        [name],
    ).fetchone()
    if row is None:
        raise BadInput(f"plan {spec.plan_id}: table {spec.schema}.{spec.table} does not exist")
    oid, reltuples, relpages = row
    types = spec.key_types
    if spec.key_kind != "ctid" and len(types) != len(spec.key):
        found = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped AND attname = ANY(%s)",
                [oid, list(spec.key)],
            ).fetchall()
        )
        missing = [c for c in spec.key if c not in found]
        if missing:
            raise BadInput(f"plan {spec.plan_id}: key column(s) {', '.join(missing)} not in {name}")
        types = tuple(found[c] for c in spec.key)
    return Target(spec, int(oid), tuple(types), int(reltuples), int(relpages))


# --------------------------------------------------------------------------- chunks


def _nblocks(conn: psycopg.Connection[Any], target: Target) -> int:
    row = conn.execute(
        "SELECT (pg_relation_size(%s::oid) / current_setting('block_size')::int8)::int8", [target.oid]
    ).fetchone()
    return int(row[0]) if row else 0


def plan_chunks(conn: psycopg.Connection[Any], target: Target, n: int) -> list[tuple[Key | None, Key | None]]:
    """Split the key space into about ``n`` ranges ``(lo, hi]`` from a sample of keys.

    The sample is ``TABLESAMPLE SYSTEM`` (whole pages, cheap at any size) ordered by the
    server, so boundaries follow the key's own collation and type; the last range ends at
    the greatest key now and, for ctid tables, the page range is split evenly and its end
    fixed now: rows inserted later are already in step.
    """
    if target.ctid:
        pages = _nblocks(conn, target)
        n = max(1, min(n, pages))
        edges = [pages * i // n for i in range(n + 1)]
        return [((str(edges[i]),), (str(edges[i + 1]),)) for i in range(n)]
    # The walk ends at the greatest key that exists now: a row inserted later got its value from
    # the write itself (the trigger, or the new column's default for add-column), so a heavy
    # insert workload does not keep the backfill walking behind it.
    last = conn.execute(target.ranges.last_sql()).fetchone()
    if last is None:
        return [(None, None)]
    upper: Key = tuple(last)
    if n <= 1:
        return [(None, upper)]
    estimate = target.reltuples
    pct = 100.0 if estimate <= 50_000 else max(0.01, min(100.0, 100.0 * 20_000 / estimate))
    sample = [tuple(r) for r in conn.execute(target.ranges.sample_sql(), {"pct": pct}).fetchall()]
    if len(sample) < n and pct < 100.0:
        sample = [tuple(r) for r in conn.execute(target.ranges.sample_sql(), {"pct": 100.0}).fetchall()]
    bounds: list[Key] = []
    for i in range(1, n):
        if not sample:
            break
        b = sample[min(len(sample) - 1, i * len(sample) // n)]
        if not bounds or bounds[-1] != b:
            bounds.append(b)
    if bounds and bounds[-1] == upper:  # a sample key equal to upper would end an empty range
        bounds.pop()
    edges_k: list[Key | None] = [None, *bounds, upper]
    return [(edges_k[i], edges_k[i + 1]) for i in range(len(edges_k) - 1)]


@dataclass
class Chunk:
    number: int
    lo: Key | None
    hi: Key | None
    last: Key | None
    rows_done: int
    previous_worker: str | None = None


# --------------------------------------------------------------------------- the run


class _Run:
    """State shared by the workers of one ``run_backfill`` call."""

    def __init__(
        self,
        engine: Engine,
        target: Target,
        options: BackfillOptions,
        probe: HealthProbe,
        reconnect_timeout_s: float,
    ) -> None:
        self.engine = engine
        self.target = target
        self.spec = target.spec
        self.options = options
        self.probe = probe
        self.stop = threading.Event()
        self.lock = threading.Lock()
        #: Notified when a worker of this process finishes a chunk, so an idle sibling waiting
        #: for the last chunks notices the end at once instead of at its next poll.
        self.chunk_done = threading.Condition()
        self.result = BackfillResult(plan_id=self.spec.plan_id, status="incomplete", workers=options.workers)
        self.errors: list[BaseException] = []
        self.ckpt = _control("backfill_checkpoints")
        self.run_id = uuid.uuid4().hex[:6]
        self.reconnect_timeout = reconnect_timeout_s
        #: (min, max) of a dense integer key: batches are then plain arithmetic ranges.
        self.dense: tuple[int, int] | None = None
        timeout = options.statement_timeout_ms or int(options.lease_seconds * 500)
        self.settings_sql = (
            f"SELECT set_config('{TRIGGER_SKIP_SETTING}', {literal(self.spec.skip_value)}, true), "
            f"set_config('lock_timeout', '{int(options.lock_timeout_ms)}ms', true), "
            f"set_config('statement_timeout', '{int(timeout)}ms', true), "
            # A worker frozen mid-batch (SIGSTOP, a paused VM) would hold its row locks and
            # its checkpoint row forever; the server ends such a session, freeing the chunk.
            f"set_config('idle_in_transaction_session_timeout', '{int(timeout)}ms', true)"
            + (", set_config('synchronous_commit', 'off', true)" if options.synchronous_commit_off else "")
        )

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self.result, k, getattr(self.result, k) + v)


class _Worker:
    def __init__(self, run: _Run, index: int) -> None:
        self.run = run
        self.index = index
        #: The worker's name without its session: the ``:b<backend pid>`` suffix changes on reconnect.
        self.base = f"{socket.gethostname()}:{os.getpid()}:{run.run_id}:{index}"
        self.name = self.base
        #: The chunk being worked on, kept across a lost connection so it can be re-taken.
        self.held: Chunk | None = None
        #: This worker's name in the session that held ``held`` (its lease is in that name).
        self.held_as = self.name
        o = run.options
        if run.target.ctid:
            rpp = run.target.rows_per_page
            self.sizer = BatchSizer(
                o.batch_time_ms / 1000,
                max(1, int(o.min_batch / rpp)),
                max(1, int(o.max_batch / rpp)),
                max(1, int(o.start_batch / rpp)),
                o.growth,
            )
        else:
            self.sizer = BatchSizer(o.batch_time_ms / 1000, o.min_batch, o.max_batch, o.start_batch, o.growth)
        self.retries_in_row = 0

    # -- thread body

    def open(self) -> psycopg.Connection[Any]:
        """A session for this worker, named after its backend pid so that other workers see at
        once when it is gone (its process killed, the server restarted) and may take its chunk."""
        conn = _connect(self.run.engine, f"ecm backfill {self.run.spec.plan_id}")
        self.name = f"{self.base}:b{conn.info.backend_pid}"
        return conn

    def __call__(self) -> None:
        link: Link | None = None
        try:
            link = Link(
                self.open,
                plan_id=self.run.spec.plan_id,
                who=self.base,
                timeout=self.run.reconnect_timeout,
                stop=self.run.stop,
            )
            while True:
                try:
                    self.resume(link.conn)
                    self.loop(link.conn)
                    return
                except Exception as exc:
                    if self.run.stop.is_set() or not connection_lost(exc):
                        raise
                    link.replace(exc)
                    self.reconnected(link.outages[-1])
        except BaseException as exc:
            self.run.errors.append(exc)
            self.run.stop.set()
        finally:
            if link is not None:
                try:
                    if link.usable:
                        conn = link.conn
                        if conn.info.transaction_status != 0:
                            conn.rollback()
                        # Hand unfinished chunks back at once instead of at lease expiry.
                        conn.execute(
                            f"UPDATE {self.run.ckpt} SET lease_expires_at = now() "
                            "WHERE plan_id = %s AND worker = %s AND finished_at IS NULL",
                            [self.run.spec.plan_id, self.name],
                        )
                except Exception:
                    pass
                link.close()

    def loop(self, conn: psycopg.Connection[Any]) -> None:
        poll = min(1.0, self.run.options.lease_seconds / 4)
        waiting_logged = False
        while not self.run.stop.is_set():
            chunk = self.claim(conn)
            if chunk is None:
                left = self.unfinished(conn)
                if left == 0:
                    return
                if not waiting_logged:
                    log.info(
                        "backfill_waiting",
                        plan_id=self.run.spec.plan_id,
                        worker=self.name,
                        chunks_held_elsewhere=left,
                        detail="remaining chunks are leased by other workers; waiting to take over if they stop",
                    )
                    waiting_logged = True
                with self.run.chunk_done:
                    self.run.chunk_done.wait(poll)
                continue
            waiting_logged = False
            self.work(conn, chunk)

    def work(self, conn: psycopg.Connection[Any], chunk: Chunk) -> None:
        """Batches over ``chunk`` until it is finished or lost; a lost connection leaves it held."""
        self.held, self.held_as = chunk, self.name
        if self.run.target.ctid:
            self.pages(conn, chunk)
        elif self.run.dense is not None:
            self.dense_keys(conn, chunk)
        else:
            self.keys(conn, chunk)
        self.held = None

    # -- after a lost connection

    def reconnected(self, outage_s: float) -> None:
        info = {
            "worker": self.held_as if self.held is not None else self.base,
            "outage_s": round(outage_s, 2),
            "chunk": self.held.number if self.held is not None else None,
        }
        with self.run.lock:
            self.run.result.reconnects.append(info)

    def resume(self, conn: psycopg.Connection[Any]) -> None:
        """Finish the chunk this worker held when its connection was lost, if it still may."""
        if self.held is None:
            return
        again = self.reclaim(conn, self.held)
        self.held = None
        if again is not None:
            self.work(conn, again)

    def reclaim(self, conn: psycopg.Connection[Any], chunk: Chunk) -> Chunk | None:
        """Re-take the plan's advisory lock and the chunk's lease before writing again.

        The lease is still in the old session's name, which no longer exists, so any worker may
        have taken the chunk over meanwhile; the checkpoint (committed with its batch) says
        where to go on, so the batch that was in flight when the server went away is the only
        one done again. The advisory lock is the one checkpoints are created and reset under:
        a ``--restart`` or a reset that happened during the outage is seen, not overwritten.
        """
        with conn.transaction():
            _plan_lock(conn, self.run.spec.plan_id)
            row = conn.execute(
                f"""
                UPDATE {self.run.ckpt} c
                   SET worker = %(me)s,
                       lease_expires_at = now() + make_interval(secs => %(lease)s),
                       updated_at = now()
                 WHERE c.plan_id = %(plan)s AND c.chunk = %(chunk)s AND c.finished_at IS NULL
                   AND (c.worker = %(was)s OR c.worker IS NULL OR c.lease_expires_at IS NULL
                        OR c.lease_expires_at < now()
                        OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                        WHERE a.pid = substring(c.worker FROM ':b([0-9]+)$')::int))
                RETURNING c.lo_key, c.hi_key, c.last_key, c.rows_done
                """,
                {
                    "me": self.name,
                    "was": self.held_as,
                    "lease": self.run.options.lease_seconds,
                    "plan": self.run.spec.plan_id,
                    "chunk": chunk.number,
                },
            ).fetchone()
        if row is None:
            log.info(
                "backfill_chunk_gone",
                plan_id=self.run.spec.plan_id,
                worker=self.name,
                chunk=chunk.number,
                detail=f"chunk {chunk.number} was finished or taken over while the connection was lost",
            )
            return None
        lo, hi, last, rows_done = row
        again = Chunk(
            chunk.number, _load_key(lo), _load_key(hi), _load_key(last), int(rows_done), self.held_as
        )
        if again.last is None:
            where = "its start"
        else:
            where = f"page {again.last[0]}" if self.run.target.ctid else f"key {_fmt_key(again.last)}"
        log.info(
            "backfill_resume",
            plan_id=self.run.spec.plan_id,
            worker=self.name,
            chunk=again.number,
            last_key=list(again.last) if again.last is not None else None,
            rows_done=again.rows_done,
            detail=f"reconnected: resuming chunk {again.number} after {where} "
            f"({again.rows_done} rows already done)",
        )
        return again

    # -- chunk leases

    def claim(self, conn: psycopg.Connection[Any]) -> Chunk | None:
        ckpt = self.run.ckpt
        row = conn.execute(
            f"""
            UPDATE {ckpt} c
               SET worker = %(me)s,
                   lease_expires_at = now() + make_interval(secs => %(lease)s),
                   updated_at = now()
              FROM (SELECT plan_id, chunk, worker AS prev FROM {ckpt} x
                     WHERE x.plan_id = %(plan)s AND x.finished_at IS NULL
                       AND (x.worker IS NULL OR x.lease_expires_at IS NULL OR x.lease_expires_at < now()
                            OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                                            WHERE a.pid = substring(x.worker FROM ':b([0-9]+)$')::int))
                     ORDER BY x.chunk LIMIT 1 FOR UPDATE SKIP LOCKED) f
             WHERE c.plan_id = f.plan_id AND c.chunk = f.chunk
            RETURNING c.chunk, c.lo_key, c.hi_key, c.last_key, c.rows_done, f.prev,
                      (c.lease_expires_at IS NOT NULL AND f.prev IS NOT NULL)
            """,
            {"me": self.name, "lease": self.run.options.lease_seconds, "plan": self.run.spec.plan_id},
        ).fetchone()
        if row is None:
            return None
        number, lo, hi, last, rows_done, prev, _ = row
        chunk = Chunk(int(number), _load_key(lo), _load_key(hi), _load_key(last), int(rows_done), prev)
        if prev is not None and prev != self.name:
            info = {"chunk": chunk.number, "from_worker": prev, "last_key": chunk.last}
            log.warning(
                "backfill_takeover",
                plan_id=self.run.spec.plan_id,
                worker=self.name,
                detail=f"taking over chunk {chunk.number} from {prev} (its lease expired or its "
                f"session is gone), resuming after key {chunk.last}",
                **info,
            )
            with self.run.lock:
                self.run.result.takeovers.append(info)
        if chunk.last is not None:
            info = {"chunk": chunk.number, "last_key": list(chunk.last), "rows_done": chunk.rows_done}
            where = f"page {chunk.last[0]}" if self.run.target.ctid else f"key {_fmt_key(chunk.last)}"
            log.info(
                "backfill_resume",
                plan_id=self.run.spec.plan_id,
                worker=self.name,
                detail=f"resuming chunk {chunk.number} after {where} ({chunk.rows_done} rows already done)",
                **info,
            )
            with self.run.lock:
                self.run.result.resumed.append(info)
        return chunk

    def unfinished(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            f"SELECT count(*) FROM {self.run.ckpt} WHERE plan_id = %s AND finished_at IS NULL",
            [self.run.spec.plan_id],
        ).fetchone()
        return int(row[0]) if row else 0

    def renew(self, conn: psycopg.Connection[Any], chunk: Chunk) -> bool:
        cur = conn.execute(
            f"UPDATE {self.run.ckpt} SET lease_expires_at = now() + make_interval(secs => %s), "
            "updated_at = now() WHERE plan_id = %s AND chunk = %s AND worker = %s AND finished_at IS NULL",
            [self.run.options.lease_seconds, self.run.spec.plan_id, chunk.number, self.name],
        )
        return cur.rowcount == 1

    def checkpoint(
        self, conn: psycopg.Connection[Any], chunk: Chunk, last: Key | None, rows: int, final: bool
    ) -> bool:
        """Record the batch in its own transaction; False when another worker owns the chunk now."""
        cur = conn.execute(
            f"""
            UPDATE {self.run.ckpt}
               SET last_key = COALESCE(%(last)s::jsonb, last_key), rows_done = rows_done + %(rows)s,
                   batch_size = %(size)s, lease_expires_at = now() + make_interval(secs => %(lease)s),
                   updated_at = now(), finished_at = CASE WHEN %(final)s THEN now() END
             WHERE plan_id = %(plan)s AND chunk = %(chunk)s AND worker = %(me)s AND finished_at IS NULL
            """,
            {
                "last": _dump_key(last),
                "rows": rows,
                "size": min(self.sizer.size, 2**31 - 1),
                "lease": self.run.options.lease_seconds,
                "final": final,
                "plan": self.run.spec.plan_id,
                "chunk": chunk.number,
                "me": self.name,
            },
        )
        return cur.rowcount == 1

    def lost(self, chunk: Chunk) -> None:
        log.warning(
            "backfill_lease_lost",
            plan_id=self.run.spec.plan_id,
            worker=self.name,
            chunk=chunk.number,
            detail="another worker took this chunk over; its batch was rolled back",
        )

    # -- throttling

    def healthy(self, conn: psycopg.Connection[Any], chunk: Chunk) -> bool:
        """Pause while a probe objects; False when the lease was lost meanwhile."""
        ctx = ProbeContext(conn, self.run.spec, self.run.target.oid, self.name)
        reason = self.ask(ctx)
        if reason is None:
            return True
        started = time.monotonic()
        log.warning(
            "backfill_paused",
            plan_id=self.run.spec.plan_id,
            worker=self.name,
            chunk=chunk.number,
            reason=reason,
        )
        with self.run.lock:
            self.run.result.pauses.append(reason)
        while reason is not None and not self.run.stop.is_set():
            if not self.renew(conn, chunk):
                self.lost(chunk)
                return False
            self.run.stop.wait(self.run.options.pause_seconds)
            reason = self.ask(ctx)
        log.info(
            "backfill_unpaused",
            plan_id=self.run.spec.plan_id,
            worker=self.name,
            paused_s=round(time.monotonic() - started, 2),
        )
        return True

    def ask(self, ctx: ProbeContext) -> str | None:
        try:
            return self.run.probe(ctx)
        except Exception as exc:
            if connection_lost(exc):  # not the probe's fault: reconnect, do not carry on blind
                raise
            # A monitoring query that fails (permissions, a dropped view) must not stop the
            # backfill; it is logged and the batch goes on.
            log.warning("backfill_probe_failed", plan_id=self.run.spec.plan_id, error=_first_line(exc))
            return None

    def retry(self, conn: psycopg.Connection[Any], chunk: Chunk, exc: BaseException) -> bool:
        """A batch hit a lock or statement timeout: pause, shrink, go again (False: lease lost)."""
        self.retries_in_row += 1
        self.run.add(retries=1)
        if self.retries_in_row > self.run.options.max_retries:
            raise OperationalError(
                f"backfill of {self.run.spec.plan_id}: {self.retries_in_row - 1} batches in a row failed; "
                f"last: {_first_line(exc)}"
            ) from exc
        state = _sqlstate(exc)
        reason = (
            f"batch waited on locks longer than {self.run.options.lock_timeout_ms} ms"
            if state == "55P03"
            else f"batch failed and is retried smaller: {_first_line(exc)}"
        )
        size = self.sizer.shrink()
        log.warning(
            "backfill_paused",
            plan_id=self.run.spec.plan_id,
            worker=self.name,
            chunk=chunk.number,
            reason=reason,
            sqlstate=state,
            next_batch=size,
        )
        with self.run.lock:
            self.run.result.pauses.append(reason)
        self.run.stop.wait(min(self.run.options.pause_seconds, 0.5 * self.retries_in_row))
        return self.renew(conn, chunk)

    def between_batches(self, conn: psycopg.Connection[Any], chunk: Chunk) -> bool:
        if not self.healthy(conn, chunk):
            return False
        if self.run.options.sleep_ms:
            self.run.stop.wait(self.run.options.sleep_ms / 1000)
        return not self.run.stop.is_set()

    # -- batches

    def batch(
        self, conn: psycopg.Connection[Any], chunk: Chunk, body: Callable[[], _T]
    ) -> _T | _Retry | None:
        """One batch: its own transaction with the batch's session settings around ``body``.

        ``body`` writes the checkpoint (raising _LeaseLost when the lease is gone). Returns
        body's result, RETRY after a retryable error the retry policy accepts, or None when
        the chunk is lost to this worker (the caller stops working on it).
        """
        import psycopg

        try:
            with conn.transaction():
                conn.execute(self.run.settings_sql)
                result = body()
        except _LeaseLost:
            self.lost(chunk)
            return None
        except psycopg.Error as exc:
            if _sqlstate(exc) in RETRYABLE and self.retry(conn, chunk, exc):
                return RETRY
            if _sqlstate(exc) in RETRYABLE:
                self.lost(chunk)
                return None
            raise
        self.retries_in_row = 0
        return result

    def keys(self, conn: psycopg.Connection[Any], chunk: Chunk) -> None:

        r = self.run.target.ranges
        spec = self.run.spec
        last = chunk.last if chunk.last is not None else chunk.lo
        hi = chunk.hi
        while self.between_batches(conn, chunk):
            size = self.sizer.size
            t0 = time.perf_counter()

            def body(last: Key | None = last, size: int = size) -> tuple[int, bool, Key | None, int]:
                params = r.params(last, hi)
                row = conn.execute(
                    r.bound_sql(last is not None, hi is not None), {**params, "off": size - 1}
                ).fetchone()
                if row is not None:
                    upper: Key | None = tuple(row)
                    rows, final = size, False
                else:
                    count = conn.execute(r.count_sql(last is not None, hi is not None), params).fetchone()
                    rows, final, upper = int(count[0]) if count else 0, True, hi
                if not self.checkpoint(conn, chunk, upper, rows, final):
                    raise _LeaseLost
                updated = 0
                if rows:
                    cur = conn.execute(
                        r.update_sql(spec, last is not None, upper is not None), r.params(last, upper)
                    )
                    updated = max(cur.rowcount, 0)
                return rows, final, upper, updated

            outcome = self.batch(conn, chunk, body)
            if outcome is RETRY:
                continue
            if outcome is None:
                return
            assert isinstance(outcome, tuple)
            rows, final, upper, updated = outcome
            took = time.perf_counter() - t0
            self.sizer.observe(took, rows)
            log.debug(
                "backfill_batch",
                worker=self.name,
                chunk=chunk.number,
                rows=rows,
                updated=updated,
                ms=round(took * 1000, 1),
                next_size=self.sizer.size,
            )
            self.run.add(rows_done=rows, rows_updated=updated, batches=1)
            last = upper
            if final:
                self.finished(chunk)
                return

    def dense_keys(self, conn: psycopg.Connection[Any], chunk: Chunk) -> None:
        """Integer keys with few gaps: ``key > n AND key <= n + size``, no bound query.

        Saves the index-only scan each batch otherwise spends finding its upper key. The
        size is then in key units, which the time-based sizing absorbs; a batch that
        changes nothing jumps to the next existing key, so a gap costs one lookup. Rows
        done are the rows the batch changed (exact, since the count commits with it).
        """

        assert self.run.dense is not None
        r = self.run.target.ranges
        kmin, kmax = self.run.dense
        start = chunk.last if chunk.last is not None else chunk.lo
        last = int(start[0]) if start is not None else kmin - 1
        end = int(chunk.hi[0]) if chunk.hi is not None else kmax
        update_sql = r.update_sql(self.run.spec, True, True)
        next_sql = f"SELECT min({r.columns[0]}) FROM {r.table} WHERE {r.predicate(True, True)}"
        to_end = False
        while self.between_batches(conn, chunk):
            upper = end if to_end else min(last + self.sizer.size, end)
            final = upper >= end
            t0 = time.perf_counter()

            def body(last: int = last, upper: int = upper, final: bool = final) -> int:
                cur = conn.execute(update_sql, r.params((str(last),), (str(upper),)))
                updated = max(cur.rowcount, 0)
                if not self.checkpoint(conn, chunk, (str(upper),), updated, final):
                    raise _LeaseLost
                return updated

            outcome = self.batch(conn, chunk, body)
            if outcome is RETRY:
                continue
            if outcome is None:
                return
            assert isinstance(outcome, int)
            updated = outcome
            took = time.perf_counter() - t0
            self.sizer.observe(took, 0 if final else None)
            log.debug(
                "backfill_batch",
                worker=self.name,
                chunk=chunk.number,
                upper=upper,
                updated=updated,
                ms=round(took * 1000, 1),
            )
            self.run.add(rows_done=updated, rows_updated=updated, batches=1)
            if final:
                self.finished(chunk)
                return
            last = upper
            if updated == 0:
                row = conn.execute(next_sql, r.params((str(upper),), (str(end),))).fetchone()
                if row is None or row[0] is None:
                    to_end = True
                else:
                    last = int(row[0]) - 1

    def pages(self, conn: psycopg.Connection[Any], chunk: Chunk) -> None:

        p = self.run.target.pages
        spec = self.run.spec
        assert chunk.lo is not None and chunk.hi is not None
        page = int((chunk.last or chunk.lo)[0])
        end_page = int(chunk.hi[0])
        update_sql = p.update_sql(spec)
        while self.between_batches(conn, chunk):
            stop = min(page + self.sizer.size, end_page)
            final = stop >= end_page
            t0 = time.perf_counter()

            def body(page: int = page, stop: int = stop, final: bool = final) -> int:
                updated = 0
                if stop > page:
                    cur = conn.execute(update_sql, p.params(page, stop))
                    updated = max(cur.rowcount, 0)
                if not self.checkpoint(conn, chunk, (str(stop),), updated, final):
                    raise _LeaseLost
                return updated

            outcome = self.batch(conn, chunk, body)
            if outcome is RETRY:
                continue
            if outcome is None:
                return
            assert isinstance(outcome, int)
            updated = outcome
            self.sizer.observe(time.perf_counter() - t0, None if not final else 0)
            self.run.add(rows_done=updated, rows_updated=updated, batches=1)
            page = stop
            if final:
                self.finished(chunk)
                return

    def finished(self, chunk: Chunk) -> None:
        with self.run.lock:
            self.run.result.chunks_finished.append(chunk.number)
        with self.run.chunk_done:
            self.run.chunk_done.notify_all()
        log.info("backfill_chunk_done", plan_id=self.run.spec.plan_id, worker=self.name, chunk=chunk.number)


class _LeaseLost(Exception):
    """Raised inside a batch transaction to roll it back: another worker owns the chunk."""


def _fmt_key(key: Key) -> str:
    return key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"


# --------------------------------------------------------------------------- entry points


def _default_chunks(options: BackfillOptions, target: Target) -> int:
    if options.chunks:
        return options.chunks
    by_size = math.ceil(target.rows_estimate / 1_000_000) if target.rows_estimate else 1
    return min(256, max(by_size, options.workers * 4 if options.workers > 1 else 1))


def _prepare(conn: psycopg.Connection[Any], target: Target, options: BackfillOptions) -> tuple[bool, int]:
    """Create the chunk rows once per plan (serialized by an advisory lock); (already complete, chunks)."""
    spec = target.spec
    ckpt = _control("backfill_checkpoints")
    plans = _control("plans")
    with conn.transaction():
        _plan_lock(conn, spec.plan_id)
        if options.restart:
            conn.execute(f"DELETE FROM {ckpt} WHERE plan_id = %s", [spec.plan_id])
            conn.execute(
                f"UPDATE {plans} SET backfill_status = 'none', backfill_completed_at = NULL, "
                "verified_at = NULL, updated_at = now() WHERE plan_id = %s",
                [spec.plan_id],
            )
        counts = conn.execute(
            f"SELECT count(*), count(*) FILTER (WHERE finished_at IS NULL) FROM {ckpt} WHERE plan_id = %s",
            [spec.plan_id],
        ).fetchone()
        assert counts is not None
        total, unfinished = int(counts[0]), int(counts[1])
        status = conn.execute(
            f"SELECT backfill_status FROM {plans} WHERE plan_id = %s", [spec.plan_id]
        ).fetchone()
        if total and not unfinished:
            state = status[0] if status is not None else None
            if state == "complete":
                return True, total
            # Finished checkpoints from an earlier round: the plan was rolled back and is
            # applied again (its status was reset), or a reverse spec with no plans row of its
            # own finds rows pending again. Start over. A 'running' status with every chunk
            # finished is a run that died before its completion record: it completes below.
            if state not in (None, "running") or (state is None and _any_pending(conn, target)):
                conn.execute(f"DELETE FROM {ckpt} WHERE plan_id = %s", [spec.plan_id])
                total = 0
            elif state is None:
                return True, total
        if not total:
            chunks = plan_chunks(conn, target, _default_chunks(options, target))
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {ckpt} (plan_id, chunk, lo_key, hi_key) VALUES (%s, %s, %s::jsonb, %s::jsonb)",
                    [(spec.plan_id, i, _dump_key(lo), _dump_key(hi)) for i, (lo, hi) in enumerate(chunks)],
                )
            total = len(chunks)
            log.info(
                "backfill_planned", plan_id=spec.plan_id, chunks=total, rows_estimate=target.rows_estimate
            )
        conn.execute(
            f"UPDATE {plans} SET backfill_status = 'running', "
            "backfill_rows_estimate = COALESCE(NULLIF(%s, 0), backfill_rows_estimate), updated_at = now() "
            "WHERE plan_id = %s AND backfill_status <> 'running'",
            [target.rows_estimate, spec.plan_id],
        )
    return False, total


#: Smallest value of each integer type: the walk starts just below the minimum key.
INTEGER_TYPES = {"smallint": -(2**15), "integer": -(2**31), "bigint": -(2**63)}


def _dense_range(conn: psycopg.Connection[Any], target: Target) -> tuple[int, int] | None:
    """(min, max) of a single integer key filled at least half-way, else None."""
    if target.ctid or len(target.key_types) != 1 or target.key_types[0] not in INTEGER_TYPES:
        return None
    r = target.ranges
    row = conn.execute(f"SELECT min({r.columns[0]}), max({r.columns[0]}) FROM {r.table}").fetchone()
    if row is None or row[0] is None or target.reltuples <= 0:
        return None
    kmin, kmax = int(row[0]), int(row[1])
    if kmin <= INTEGER_TYPES[target.key_types[0]]:
        return None
    return (kmin, kmax) if target.reltuples / (kmax - kmin + 1) >= 0.5 else None


def _any_pending(conn: psycopg.Connection[Any], target: Target) -> bool:
    row = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {qualified(target.spec.schema, target.spec.table)} "
        f"WHERE {_escape(target.spec.pending_sql)})"
    ).fetchone()
    return bool(row and row[0])


def _rows_total(conn: psycopg.Connection[Any], plan_id: str) -> tuple[int, int]:
    row = conn.execute(
        f"SELECT COALESCE(sum(rows_done), 0)::int8, count(*) FILTER (WHERE finished_at IS NULL) "
        f"FROM {_control('backfill_checkpoints')} WHERE plan_id = %s",
        [plan_id],
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _complete(conn: psycopg.Connection[Any], plan_id: str) -> bool:
    """The completion record, committed synchronously whatever the batches did; False when the
    plan's chunks were planned again meanwhile (``--restart`` during a long index build)."""
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = on")
        done = conn.execute(
            f"UPDATE {_control('plans')} SET backfill_status = 'complete', "
            "backfill_completed_at = COALESCE(backfill_completed_at, now()), updated_at = now() "
            f"WHERE plan_id = %s AND NOT EXISTS (SELECT 1 FROM {_control('backfill_checkpoints')} "
            "WHERE plan_id = %s AND finished_at IS NULL) RETURNING 1",
            [plan_id, plan_id],
        ).fetchone()
        if done is not None:
            return True
        row = conn.execute(
            f"SELECT backfill_status FROM {_control('plans')} WHERE plan_id = %s", [plan_id]
        ).fetchone()
        return row is None or row[0] == "complete"  # a reverse spec has no plans row of its own


def _ensure_control(engine: Engine) -> None:
    """Create the control schema if this database has never seen ecm.

    When the tables the engine needs exist, Alembic is not even imported: a backfill job
    that starts often (one per pod) should not pay for the migration machinery.
    """
    from ..db import control
    from ..db.engine import connect

    with connect(engine) as sa_conn:
        names = [_control(t) for t in ("plans", "backfill_checkpoints", "ledger")]
        found = sa_conn.exec_driver_sql(
            "SELECT " + ", ".join(f"to_regclass({literal(n)})" for n in names)
        ).one()
        sa_conn.rollback()
        if any(v is None for v in found):
            control.ensure(sa_conn)


def _ledger_start(
    conn: psycopg.Connection[Any], plan_id: str, step: str, detail: dict[str, Any]
) -> int | None:
    row = conn.execute(
        f"INSERT INTO {_control('ledger')} (plan_id, phase, step, detail) VALUES (%s, 'backfill', %s, %s::jsonb) "
        "RETURNING id",
        [plan_id, step, json.dumps(detail, default=str)],
    ).fetchone()
    return int(row[0]) if row else None


def _ledger_end(
    conn: psycopg.Connection[Any] | None, entry: int | None, outcome: str, detail: dict[str, Any]
) -> None:
    if entry is None or conn is None or conn.closed:
        return
    try:
        if conn.info.transaction_status != 0:
            conn.rollback()
        conn.execute(
            f"UPDATE {_control('ledger')} SET finished_at = now(), outcome = %s, detail = detail || %s::jsonb "
            "WHERE id = %s",
            [outcome, json.dumps(detail, default=str), entry],
        )
    except Exception:  # the run's own outcome matters more than its ledger line
        log.warning("ledger_write_failed", entry=entry)


def run_backfill(
    engine: Engine,
    spec: BackfillSpec,
    options: BackfillOptions | None = None,
    *,
    probe: HealthProbe | None = None,
    progress: bool | None = None,
) -> BackfillResult:
    """Run (or resume, or join) the plan's backfill until every chunk is done.

    Idempotent: a finished backfill returns ``status="already_complete"`` at once. Other
    processes running the same plan share the chunks. ``probe`` is asked between batches
    in addition to the database probe. ``progress``: True draws a Rich bar on stderr,
    False logs ``backfill_progress`` events, None picks the bar when stderr is a TTY.
    """
    options = options or BackfillOptions()
    options.validate()
    timeout = reconnect_timeout()
    _ensure_control(engine)
    db_probe = DatabaseProbe(
        options.max_replication_lag_s,
        options.autovacuum,
        options.pause_on_lock_waiters,
        options.probe_interval_s,
    )
    combined: HealthProbe = AllProbes([probe, db_probe]) if probe is not None else db_probe
    started = time.monotonic()
    plan_id = spec.plan_id
    link = Link(
        lambda: _connect(engine, f"ecm backfill {plan_id}"),
        plan_id=plan_id,
        who="main",
        timeout=timeout,
    )
    entry: int | None = None
    try:
        target = link.call(lambda c: resolve(c, spec))
        done, chunks = link.call(lambda c: _prepare(c, target, options))
        if done:
            total, _ = link.call(lambda c: _rows_total(c, plan_id))
            log.info("backfill_already_complete", plan_id=plan_id, rows_total=total)
            return BackfillResult(
                plan_id=plan_id,
                status="already_complete",
                rows_total=total,
                chunks=chunks,
                workers=options.workers,
            )
        detail = {"workers": options.workers, "host": socket.gethostname()}
        entry = link.call(lambda c: _ledger_start(c, plan_id, "backfill", detail))
        run = _Run(engine, target, options, combined, timeout)
        run.dense = link.call(lambda c: _dense_range(c, target))
        run.result.chunks = chunks
        before, _ = link.call(lambda c: _rows_total(c, plan_id))
        log.info(
            "backfill_start",
            plan_id=plan_id,
            table=f"{spec.schema}.{spec.table}",
            key=list(spec.key) or ["ctid"],
            workers=options.workers,
            chunks=chunks,
            rows_estimate=target.rows_estimate,
            rows_already_done=before,
            reconnect_timeout_s=run.reconnect_timeout,
        )
        threads = [
            threading.Thread(target=_Worker(run, i), name=f"ecm-backfill-{i}", daemon=True)
            for i in range(options.workers)
        ]
        bar = sys.stderr.isatty() if progress is None else progress
        interval = 0.5 if bar else min(options.progress_interval_s, 1.0)
        try:
            with Reporter(
                plan_id,
                max(target.rows_estimate, before),
                bar=bar,
                interval_s=options.progress_interval_s,
            ) as rep:
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    for t in threads:
                        t.join(timeout=interval / len(threads))
                    # While the server is away the workers wait for it themselves; progress
                    # just skips a reading rather than hold up watching them.
                    now = link.try_call(lambda c: _rows_total(c, plan_id))
                    if now is not None:
                        rep.update(now[0])
                if not run.errors:
                    total, unfinished = link.call(lambda c: _rows_total(c, plan_id))
                    rep.update(total, final=not unfinished)
        except BaseException:
            run.stop.set()
            for t in threads:
                t.join()
            raise
        if run.errors:
            exc = run.errors[0]
            if isinstance(exc, OperationalError | BadInput):
                raise exc
            raise OperationalError(f"backfill of {plan_id} failed: {_first_line(exc)}") from exc
        result = run.result

        result.rows_total, unfinished = link.call(lambda c: _rows_total(c, plan_id))
        if unfinished == 0:
            # Every row is copied: the new column's indexes now, then the completion record
            # (a backfill whose indexes are not built yet is not complete).
            result.index_build_s = build_after_copy(engine, spec)
            completed = link.call(lambda c: _complete(c, plan_id))
            result.status = "complete" if completed else "incomplete"
        else:
            result.status = "interrupted" if run.stop.is_set() else "incomplete"
        result.elapsed_s = round(time.monotonic() - started, 3)
        result.rows_per_s = round(result.rows_done / result.elapsed_s, 1) if result.elapsed_s else 0.0
        result.chunks_finished.sort()
        log.info(
            "backfill_done",
            plan_id=plan_id,
            status=result.status,
            rows_done=result.rows_done,
            rows_updated=result.rows_updated,
            rows_total=result.rows_total,
            elapsed_s=result.elapsed_s,
            rows_per_s=result.rows_per_s,
            batches=result.batches,
            reconnects=len(result.reconnects),
            index_build_s=result.index_build_s,
        )
        _ledger_end(
            link.current, entry, "ok" if result.status == "complete" else result.status, result.to_json()
        )
        entry = None
        return result
    except KeyboardInterrupt:
        _ledger_end(link.current, entry, "interrupted", {})
        raise
    except BaseException as exc:
        _ledger_end(link.current, entry, "failed", {"error": _first_line(exc)})
        raise
    finally:
        link.close()


def verify(engine: Engine, spec: BackfillSpec, *, batch_size: int = 50_000, show: int = 10) -> VerifyResult:
    """Check in short read-only batches that no row has the new shape out of step with the old.

    Each batch is its own statement on an autocommit connection, so verify never holds a
    snapshot open across the table (which would hold back vacuum on a busy primary).
    On success it stamps ``plans.verified_at``, which the contract guard requires.
    """
    if batch_size < 1:
        raise BadInput("--batch-size must be at least 1")
    timeout = reconnect_timeout()
    _ensure_control(engine)
    started = time.monotonic()
    plan_id = spec.plan_id
    # A restart during the walk costs the batch it interrupted: each batch is read again whole.
    link = Link(
        lambda: _connect(engine, f"ecm verify {plan_id}"),
        plan_id=plan_id,
        who="verify",
        timeout=timeout,
    )
    mismatch = _escape(spec.mismatch_sql)
    try:
        target = link.call(lambda c: resolve(c, spec))
        checked = 0
        bad = 0
        keys: list[dict[str, str]] = []
        names = list(spec.key) if not target.ctid else ["ctid"]
        # Page ranges (TID range scans, PostgreSQL 14+) read each page once, in order, as one
        # set-based count would, but a batch at a time: no snapshot held across the table. A
        # row moved by a concurrent update to a page already read is not missed out of step:
        # the update went through the trigger, which put it in step.
        by_pages = target.ctid or link.call(lambda c: c.info.server_version) >= 140000
        if by_pages:
            p = target.pages
            keys_sql = p.mismatch_keys_sql(spec)
            step = max(1, int(batch_size / target.rows_per_page))
            end = link.call(lambda c: _nblocks(c, target))
            page = 0
            while page < end:
                params = {**p.params(page, page + step), "lim": max(0, show - len(keys))}
                # A keyed table's first keys are read in key order once the walk is over.
                wanted = show - len(keys) if target.ctid else 0

                def pages(
                    c: psycopg.Connection[Any], params: dict[str, Any] = params, want: int = wanted
                ) -> tuple[int, int, list[dict[str, str]]]:
                    row = c.execute(
                        f"SELECT count(*), count(*) FILTER (WHERE {mismatch}) FROM {p.table} WHERE {p.predicate}",
                        params,
                    ).fetchone()
                    assert row is not None
                    found: list[dict[str, str]] = []
                    if row[1] and want > 0:
                        found = [
                            dict(zip(names, map(str, k), strict=True)) for k in c.execute(keys_sql, params)
                        ]
                    return int(row[0]), int(row[1]), found

                n, n_bad, found_in_pages = link.call(pages)
                checked += n
                bad += n_bad
                keys += found_in_pages
                page += step
                if page >= end:
                    end = link.call(lambda c: _nblocks(c, target))
            if bad and not target.ctid and show > 0:
                r = target.ranges

                def first_keys(c: psycopg.Connection[Any]) -> list[dict[str, str]]:
                    rows = c.execute(r.mismatch_keys_sql(spec, False, False), {"lim": show})
                    return [dict(zip(names, map(str, k), strict=True)) for k in rows]

                keys = link.call(first_keys)
        else:
            r = target.ranges
            last: Key | None = None
            while True:

                def keyed(
                    c: psycopg.Connection[Any], last: Key | None = last, want: int = show - len(keys)
                ) -> tuple[Key | None, int, int, list[dict[str, str]]]:
                    row = c.execute(
                        r.bound_sql(last is not None, False), {**r.params(last, None), "off": batch_size - 1}
                    ).fetchone()
                    upper: Key | None = tuple(row) if row is not None else None
                    rng = r.params(last, upper)
                    lo_, hi_ = last is not None, upper is not None
                    counts = c.execute(
                        f"SELECT count(*), count(*) FILTER (WHERE {mismatch}) FROM {r.table} "
                        f"WHERE {r.predicate(lo_, hi_)}",
                        rng,
                    ).fetchone()
                    assert counts is not None
                    found = []
                    if counts[1] and want > 0:
                        rows = c.execute(r.mismatch_keys_sql(spec, lo_, hi_), {**rng, "lim": want})
                        found = [dict(zip(names, map(str, k), strict=True)) for k in rows]
                    return upper, int(counts[0]), int(counts[1]), found

                upper, n, n_bad, found_keys = link.call(keyed)
                checked += n
                bad += n_bad
                keys += found_keys
                if upper is None:
                    break
                last = upper
        ok = bad == 0
        if ok:
            link.call(
                lambda c: c.execute(
                    f"UPDATE {_control('plans')} SET verified_at = now(), updated_at = now() WHERE plan_id = %s",
                    [plan_id],
                )
            )
        result = VerifyResult(plan_id, ok, checked, bad, keys, round(time.monotonic() - started, 3))
        log.info(
            "backfill_verified" if ok else "backfill_verify_failed",
            plan_id=plan_id,
            rows_checked=checked,
            mismatch_count=bad,
            first_mismatches=keys,
            elapsed_s=result.elapsed_s,
        )
        return result
    finally:
        link.close()


def _escape(fragment: str) -> str:
    from .keys import escape_percent

    return escape_percent(fragment)


def load_extra_specs(engine: Engine, plan_id: str) -> list[BackfillSpec]:
    """The backfills of a plan's other tables (bigint-key's referencing tables), in order; the
    plan's own (:func:`load_spec`) runs after them, so its "complete" means all of them."""
    conn = _connect(engine, "ecm")
    try:
        row = conn.execute(
            f"SELECT spec -> 'backfills' FROM {_control('plans')} WHERE plan_id = %s", [plan_id]
        ).fetchone()
    finally:
        conn.close()
    if row is None or not row[0]:
        return []
    data = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return [BackfillSpec.from_json(x) for x in data]


def load_spec(engine: Engine, plan_id: str) -> BackfillSpec:
    """The plan's backfill spec from ``<control>.plans``; BadInput when there is none."""
    conn = _connect(engine, "ecm")
    try:
        exists = conn.execute("SELECT to_regclass(%s)", [_control("plans")]).fetchone()
        if exists is None or exists[0] is None:
            raise BadInput(
                f"unknown plan {plan_id!r}: the control schema {control_schema()} is not initialized"
            )
        row = conn.execute(
            f"SELECT spec -> 'backfill' FROM {_control('plans')} WHERE plan_id = %s", [plan_id]
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        raise BadInput(f"unknown plan {plan_id!r} (see `ecm status` for the plans this database knows)")
    if not row[0]:
        raise BadInput(f"plan {plan_id!r} has no backfill")
    data = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    try:
        return BackfillSpec.from_json(data)
    except TypeError as exc:
        raise BadInput(f"plan {plan_id!r}: malformed backfill spec: {exc}") from exc


__all__ = [
    "BackfillOptions",
    "BackfillResult",
    "BatchSizer",
    "HealthProbe",
    "ProbeContext",
    "VerifyResult",
    "load_spec",
    "run_backfill",
    "verify",
]
