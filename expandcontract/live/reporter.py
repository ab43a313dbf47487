"""LiveReporter: an application process tells the control schema it is alive and what it maps.

The contract guard refuses to remove a column while any live instance maps it, so the
reporter's job is to be *truthful about liveness* without ever hurting the application:

* Registration and heartbeats write the database clock (``now()``); the guard measures
  ages with it too, so a host's skewed clock cannot make a dead instance look live.
* A failing heartbeat (database restarting, failover) is logged and retried with
  backoff on the heartbeat thread; nothing is ever raised into the application. An
  instance that cannot report simply expires after its TTL, which is the safe direction:
  the guard then needs other evidence before it lets a contract run.
* SIGTERM (the orchestrator's "please stop") deregisters promptly so a rolling deploy's
  contract need not wait for the TTL. The handler itself only flags and wakes the
  heartbeat thread (signal handlers must not take locks or do I/O); the thread
  deregisters with a timeout, then the previous handler's behaviour follows.
* ``fork()`` copies no threads, so a pre-forking server's workers would look dead (or,
  worse, share the parent's identity). Each forked child registers as its own instance.
* Heartbeats go through a small psycopg 3 engine of the reporter's own, derived from
  whatever the application hands in (an Engine of any driver, an AsyncEngine, a URL).
  The application's pool may be exhausted, or asyncio-bound to a loop the heartbeat
  thread cannot use; liveness must not depend on either. The application's own engine
  is asked once, at start, for what only it knows: a password kept outside its URL and
  the schema its connections resolve unqualified table names in.
* A ``role`` says whether the instance serves. Command-line runs that import the
  application (``flask db upgrade``, ``alembic``, ``ecm`` itself) still block a contract
  while they run, but are no evidence that the serving fleet reports.
* Beside the names it maps, it registers each mapped column's type (as SQLAlchemy's
  PostgreSQL dialect compiles it, no server needed) and nullability, so the guard can
  also hold a contract that retypes a column or makes it NOT NULL under this code.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import first_line
from ..guard import ROLES, Role
from ..log import get_logger
from .usage import FALLBACK_SCHEMA, schema_types, schema_usage

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

log = get_logger("expandcontract.live")

#: Longest a stop (or SIGTERM) waits for the deregistration before giving up on it.
DEREGISTER_TIMEOUT = 5.0
#: First retry delay after a failed heartbeat; doubles per failure, capped at the interval.
BACKOFF_FIRST = 0.25
#: Per-statement limit for the reporter's own writes, so a stuck lock cannot pile them up.
STATEMENT_TIMEOUT = "5s"
#: ``application_name`` of the reporter's own connections (followed by the app's name).
APPLICATION_NAME = "ecm-live"
#: Longest ``astart()`` waits for the application's AsyncEngine to answer its one question.
PROBE_TIMEOUT = 5.0

_running: weakref.WeakSet[LiveReporter] = weakref.WeakSet()
_hooks_installed = False
_thread_warning_given = False
_module_lock = threading.Lock()
_process_role: Role | None = None

#: Programs (console scripts, or ``python -m`` packages) that run the application's code
#: without serving it. ``flask`` counts unless it runs the server (``flask run``).
_CLI_PROGRAMS = frozenset({"ecm", "alembic", "expandcontract"})


def set_process_role(role: Role | None) -> None:
    """Declare what this whole process is, for every reporter that names no ``role``.

    For a program's own entry point: a management command that imports the application
    (and so starts its reporter) calls ``set_process_role("cli")`` first. A flag in this
    process rather than an environment variable, which would leak into the servers such
    a program may start. ``None`` goes back to detecting it.
    """
    global _process_role
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    _process_role = role


def process_role(argv: Sequence[str] | None = None, main_module: str | None = None) -> Role:
    """The role of a reporter that names none: what :func:`set_process_role` said, else detected.

    ``cli`` inside ``ecm``, ``alembic`` and ``flask`` (other than ``flask run``), whether
    started as console scripts or with ``python -m``; ``server`` otherwise.
    """
    if _process_role is not None:
        return _process_role
    argv = sys.argv if argv is None else argv
    if main_module is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        main_module = str(getattr(spec, "name", None) or "")
    package = main_module.removesuffix(".__main__")
    # Either separator: a Windows console script is ``...\\Scripts\\alembic.exe``.
    program = argv[0].replace("\\", "/").rsplit("/", 1)[-1].lower() if argv else ""
    program = program.removesuffix(".exe").removesuffix("-script.py")
    if package in _CLI_PROGRAMS or program in _CLI_PROGRAMS:
        return "cli"
    if "flask" in (package, program):
        return "server" if "run" in argv[1:] else "cli"
    return "server"


def _stop_all_at_exit() -> None:
    for reporter in list(_running):
        with contextlib.suppress(Exception):
            reporter.stop()


def _restart_all_in_child() -> None:
    for reporter in list(_running):
        with contextlib.suppress(Exception):
            reporter._restart_in_child()


def _install_process_hooks() -> None:
    """One atexit and one at-fork hook for all reporters: both are process-wide and cannot be undone."""
    global _hooks_installed
    with _module_lock:
        if _hooks_installed:
            return
        atexit.register(_stop_all_at_exit)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_restart_all_in_child)
        _hooks_installed = True


def _warn_not_main_thread() -> None:
    global _thread_warning_given
    with _module_lock:
        if _thread_warning_given:
            return
        _thread_warning_given = True
    message = (
        "LiveReporter started outside the main thread: no SIGTERM handler installed "
        "(Python only allows that in the main thread); call stop() from your shutdown hook, "
        "or the instance stays live until its TTL passes"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning("live_no_signal_handler", reason="not the main thread")


def _is_async_engine(bind: object) -> bool:
    # An AsyncEngine exists only if the application imported SQLAlchemy's asyncio extension;
    # importing it here would fail in sync applications without greenlet (it is optional).
    module = sys.modules.get("sqlalchemy.ext.asyncio")
    return module is not None and isinstance(bind, module.AsyncEngine)


#: Seconds between pausing prepared statements and confirming a swap (see ``_swaps``).
PAUSE_GRACE = 0.5


class LiveReporter:
    """Report this process as a live instance of ``app`` ``version`` and the schema it maps.

    ``bind`` is the application's Engine (any driver), its AsyncEngine, or a URL; the
    reporter connects with psycopg 3 on its own connection either way. ``uses``
    (``{"table" or "schema.table": [columns]}``) adds what code without SQLAlchemy
    metadata reads or writes. ``role`` is ``server``, ``worker`` or ``cli``; left out, it
    is ``cli`` inside ``ecm``/``alembic``/``flask db`` processes and ``server`` elsewhere
    (see :func:`process_role`). Use as a context manager (``with`` or ``async with``), or
    call :meth:`start`/:meth:`stop` (:meth:`astart`/:meth:`astop` in asyncio code) from
    the framework's lifecycle hooks.
    """

    def __init__(
        self,
        bind: Engine | AsyncEngine | URL | str,
        *,
        app: str,
        version: str,
        metadata: MetaData | None = None,
        uses: Mapping[str, Iterable[str]] | None = None,
        interval: float = 10.0,
        handle_signals: bool = True,
        role: Role | None = None,
    ) -> None:
        from sqlalchemy.engine import URL, Engine

        if not app or not isinstance(app, str):
            raise ValueError("LiveReporter needs app, the application's name")
        if not version or not isinstance(version, str):
            raise ValueError("LiveReporter needs version, the deployed code's version")
        if not interval > 0:
            raise ValueError(f"interval must be positive seconds, not {interval!r}")
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if not isinstance(bind, Engine | URL | str) and not _is_async_engine(bind):
            raise TypeError(
                f"LiveReporter needs an Engine, an AsyncEngine or a database URL, not {type(bind).__name__}"
            )
        self.app = app
        self.version = version
        self.metadata = metadata
        self.uses = uses
        self.interval = float(interval)
        self.handle_signals = handle_signals
        self.id = str(uuid.uuid4())
        self.host = socket.gethostname()
        self.pid = os.getpid()
        #: When the database registered this instance (its clock); None until registered.
        self.started: datetime | None = None
        #: What the instance registered as mapped, ``{"schema.table": [columns]}``.
        self.usage: dict[str, list[str]] | None = None
        #: The types it registered, ``{"schema.table": {column: {"type", "nullable"}}}``.
        self.column_types: dict[str, dict[str, dict[str, Any]]] | None = None
        self._role = role
        self._bind = bind
        #: psycopg 3 URL of the reporter's own connections, once known.
        self._url: URL | None = None
        #: The application connection's current_schema(), once asked (see _probe).
        self._default_schema: str | None = None
        self._probed = not isinstance(bind, Engine)
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._running = False
        self._registered = False
        self._deregistered = False
        self._control_ensured = False
        self._resync = False
        self._thread: threading.Thread | None = None
        self._stop_requested = False
        self._terminating = False
        self._reraise_default = False
        self._previous_handler: Any = None
        self._handler_installed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        from .prepared import PreparedStatements

        #: Prepared statements of the application's engine, paused while a column swaps type.
        self.prepared = PreparedStatements()
        self._acked: set[str] = set()
        if not isinstance(bind, URL | str):
            self.prepared.watch(bind)

    # -- public -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    @property
    def registered(self) -> bool:
        """True once the registry has this instance and until it deregisters."""
        return self._registered and not self._deregistered

    @property
    def role(self) -> Role:
        """The role given, else this process's (:func:`process_role`), fixed once started."""
        return self._role if self._role is not None else process_role()

    def watch(self, engine: Engine | AsyncEngine) -> LiveReporter:
        """Also pause this engine's prepared statements while a column swaps type (the ``bind``
        engine is watched already); for applications with more than one engine."""
        self.prepared.watch(engine)
        return self

    def start(self) -> LiveReporter:
        """Register now (a failure is logged and retried on the thread) and start heartbeats.

        Blocking (one registration, a few milliseconds); in asyncio code ``await``
        :meth:`astart` instead, which also asks an AsyncEngine what only it knows.
        """
        if not self._begin():
            return self
        self._first_registration()
        self._launch()
        return self

    async def astart(self) -> LiveReporter:
        """:meth:`start` for asyncio code: the blocking registration runs off the event loop.

        Call it from the loop's thread (the main thread, usually): the SIGTERM handler can
        only be installed there.
        """
        import asyncio

        if not self._begin():
            return self
        if _is_async_engine(self._bind):
            await self._aprobe()
        await asyncio.to_thread(self._first_registration)
        self._launch()
        return self

    def stop(self) -> None:
        """Stop heartbeats and deregister (bounded by :data:`DEREGISTER_TIMEOUT`); idempotent."""
        if self._halt():
            self._restore_signal_handler()

    async def astop(self) -> None:
        """:meth:`stop` for asyncio code: waiting for the deregistration does not block the loop."""
        import asyncio

        if await asyncio.to_thread(self._halt):
            self._restore_signal_handler()

    deregister = stop

    def __enter__(self) -> LiveReporter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LiveReporter:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    def __repr__(self) -> str:
        return (
            f"<LiveReporter {self.app} {self.version} role={self.role} id={self.id} pid={self.pid} "
            f"{'running' if self._running else 'stopped'}>"
        )

    # -- lifecycle --------------------------------------------------------------------

    def _begin(self) -> bool:
        """Mark running; False when it already was (start is idempotent)."""
        with self._lock:
            if self._running:
                return False
            self._running = True
            self._stop_requested = False
            self._terminating = False
            self._deregistered = False
        # Fixed for the life of this start: set_process_role() later changes nothing here.
        self._role = self.role
        return True

    def _first_registration(self) -> None:
        try:
            self._register()
        except Exception as exc:
            log.warning(
                "live_register_failed",
                app=self.app,
                instance=self.id,
                error=first_line(exc),
                retry_in=self.interval,
            )

    def _launch(self) -> None:
        _install_process_hooks()
        _running.add(self)
        # The thread first: a SIGTERM right after the handler is installed needs it to deregister.
        self._start_thread(register_first=not self._registered)
        if self.handle_signals:
            self._install_signal_handler()

    def _halt(self) -> bool:
        """Stop the heartbeat thread, deregister and close our engine; False if not running."""
        with self._lock:
            if not self._running:
                return False
            self._running = False
        _running.discard(self)
        self._stop_requested = True
        self._wake()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            # The heartbeat thread deregisters on its way out.
            thread.join(DEREGISTER_TIMEOUT + 1.0)
        elif thread is None or not thread.is_alive():
            self._deregister_with_timeout()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        return True

    # -- database ---------------------------------------------------------------------

    def _probe(self) -> None:
        """Ask the application's (sync) Engine once what only its connections know.

        A password kept outside the URL (``connect_args``, a ``creator``) and the schema
        unqualified table names resolve to (a ``search_path`` set in ``connect_args``):
        the reporter's own connection would otherwise register the wrong tables.
        Failing is not fatal: registration goes on with the URL, and tries again on recovery.
        """
        from sqlalchemy import text
        from sqlalchemy.engine import Engine

        from ..db.engine import bind_url
        from ..urls import to_psycopg

        bind = self._bind
        if self._probed or not isinstance(bind, Engine):
            return
        try:
            with bind.connect() as conn:
                self._default_schema = conn.execute(text("SELECT current_schema()")).scalar()
                self._set_url(to_psycopg(bind_url(conn)))
                conn.rollback()
        except Exception as exc:
            log.warning("live_probe_failed", app=self.app, instance=self.id, error=first_line(exc))
            return
        self._probed = True

    async def _aprobe(self) -> None:
        """:meth:`_probe` for an AsyncEngine, on the application's event loop (its pool is bound to it)."""
        import asyncio

        from sqlalchemy import text

        from ..db.engine import bind_url
        from ..urls import to_psycopg

        bind: Any = self._bind

        async def ask() -> None:
            async with bind.connect() as aconn:
                self._default_schema = (await aconn.execute(text("SELECT current_schema()"))).scalar()
                self._set_url(to_psycopg(bind_url(aconn.sync_connection)))
                await aconn.rollback()

        try:
            # Bounded: a database that is down must not hold the application's startup for
            # asyncpg's own 60 s connect timeout; the registration then retries on its thread.
            await asyncio.wait_for(ask(), PROBE_TIMEOUT)
        except Exception as exc:
            log.warning("live_probe_failed", app=self.app, instance=self.id, error=first_line(exc))

    def _set_url(self, url: URL) -> None:
        if self._url is not None and url != self._url and self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._url = url

    def _own_url(self) -> URL:
        """The psycopg 3 URL of the database ``bind`` names, whatever its driver."""
        from sqlalchemy.engine import URL

        from ..db.engine import bind_url
        from ..urls import to_psycopg

        if self._url is None:
            bind = self._bind
            self._url = to_psycopg(bind if isinstance(bind, str | URL) else bind_url(bind))
        return self._url

    def _get_engine(self) -> Engine:
        if self._engine is None:
            from ..db.engine import create

            url = self._own_url()
            # Named in pg_stat_activity, unless the URL names it already.
            name = (
                {}
                if "application_name" in url.query
                else {"application_name": f"{APPLICATION_NAME} {self.app}"[:63]}
            )
            # Its own small pool: the heartbeat and a deregistration at most at once.
            self._engine = create(
                url.render_as_string(hide_password=False), pool_size=1, max_overflow=1, connect_args=name
            )
        return self._engine

    def _timeouts(self, conn: Connection) -> None:
        from sqlalchemy import text

        conn.execute(text(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"))

    def _ensure_control(self, conn: Connection) -> None:
        """Bring the control schema to head; applications may start before anyone ran `ecm init`.

        An application role that may not upgrade an older control schema still registers
        in the registry that is there (without the columns it lacks).
        """
        from sqlalchemy import text

        from ..db import control
        from . import registry

        try:
            control.ensure(conn)
        except Exception as exc:
            if conn.in_transaction():
                conn.rollback()
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": registry.table()}).scalar() is None:
                raise
            conn.rollback()
            log.warning(
                "live_control_upgrade_skipped",
                app=self.app,
                instance=self.id,
                error=first_line(exc),
                detail="registering in the existing registry; run `ecm init` to upgrade it",
            )

    def _register(self) -> None:
        from sqlalchemy import text

        from . import registry

        self._probe()
        with self._get_engine().connect() as conn:
            if not self._control_ensured:
                self._ensure_control(conn)
            with conn.begin():
                self._timeouts(conn)
                if self.usage is None:
                    default_schema = (
                        self._default_schema or conn.execute(text("SELECT current_schema()")).scalar()
                    )
                    self.usage = schema_usage(self.metadata, self.uses, default_schema or FALLBACK_SCHEMA)
                    self.column_types = schema_types(self.metadata, default_schema or FALLBACK_SCHEMA)
                self.started = registry.register(
                    conn,
                    instance_id=self.id,
                    app=self.app,
                    version=self.version,
                    host=self.host,
                    pid=self.pid,
                    interval_s=self.interval,
                    uses=self.usage,
                    role=self.role,
                    types=self.column_types,
                )
            self._swaps(conn)
            if not self._control_ensured:
                self._prune(conn)
        self._control_ensured = True
        self._registered = True
        self._resync = False
        log.info(
            "live_registered",
            app=self.app,
            version=self.version,
            role=self.role,
            instance=self.id,
            pid=self.pid,
            interval_s=self.interval,
            tables=len(self.usage or {}),
        )

    def _swaps(self, conn: Connection) -> None:
        """Pause prepared statements while a swap on a table we map is announced, confirm it, and
        resume once it is finished. A failure here is logged: unconfirmed, the swap waits (and
        is refused past its deadline) rather than breaking this process's statements."""
        from . import swaps

        try:
            with conn.begin():
                self._timeouts(conn)
                if not swaps.available(conn):
                    return
                mine = [(sid, t) for sid, t in swaps.pending(conn) if t in (self.usage or {})]
                if mine and not self.prepared.paused:
                    n = self.prepared.pause()
                    # A statement that looked up its prepared name just before the pause sends it
                    # within moments; confirm only after that (a stalled event loop took longer).
                    time.sleep(PAUSE_GRACE)
                    log.info(
                        "prepared_paused",
                        app=self.app,
                        instance=self.id,
                        connections=n,
                        swaps=[sid for sid, _ in mine],
                    )
                why = self.prepared.unprotected(has_url_only=isinstance(self._bind, str) or self._is_url())
                for sid, _table in mine:
                    if sid not in self._acked:
                        swaps.ack(conn, sid, self.id, protected=why is None, detail=why)
                        self._acked.add(sid)
            if not mine and self.prepared.paused:
                self.prepared.resume()
                self._acked.clear()
                log.info("prepared_resumed", app=self.app, instance=self.id)
        except Exception as exc:
            log.warning("live_swap_check_failed", app=self.app, instance=self.id, error=first_line(exc))

    def _is_url(self) -> bool:
        from sqlalchemy.engine import URL

        return isinstance(self._bind, URL)

    def _prune(self, conn: Connection) -> None:
        """Housekeeping only: an application role without DELETE must still be able to report."""
        from . import registry

        try:
            with conn.begin():
                self._timeouts(conn)
                registry.prune(conn)
        except Exception as exc:
            log.debug("live_prune_skipped", error=first_line(exc))

    def _beat(self) -> None:
        from . import registry

        with self._get_engine().connect() as conn:
            with conn.begin():
                self._timeouts(conn)
                alive = registry.heartbeat(conn, self.id)
            if alive:
                self._swaps(conn)
        if not alive:
            # Pruned or wiped by hand: come back rather than silently stop counting.
            log.warning("live_reregister", app=self.app, instance=self.id)
            self._register()

    def _deregister(self) -> None:
        from . import registry

        if self._deregistered or not self._registered:
            self._deregistered = True
            return
        with self._get_engine().connect() as conn, conn.begin():
            self._timeouts(conn)
            registry.deregister(conn, self.id)
        self._deregistered = True
        log.info("live_deregistered", app=self.app, version=self.version, instance=self.id, pid=self.pid)

    def _deregister_with_timeout(self) -> None:
        """Deregister on a helper thread so a hung database cannot hang the shutdown."""

        def work() -> None:
            try:
                self._deregister()
            except Exception as exc:
                log.warning("live_deregister_failed", app=self.app, instance=self.id, error=first_line(exc))

        helper = threading.Thread(target=work, name="ecm-live-deregister", daemon=True)
        helper.start()
        helper.join(DEREGISTER_TIMEOUT)
        if helper.is_alive():
            log.warning(
                "live_deregister_timeout", app=self.app, instance=self.id, timeout_s=DEREGISTER_TIMEOUT
            )

    # -- heartbeat thread -------------------------------------------------------------

    def _start_thread(self, *, register_first: bool) -> None:
        self._thread = threading.Thread(
            target=self._run,
            args=(register_first,),
            name=f"ecm-live-heartbeat-{self.app}",
            daemon=True,
        )
        self._thread.start()

    def _wake(self) -> None:
        # Async-signal-safe enough: a non-blocking send takes no Python-level lock.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _sleep(self, seconds: float) -> None:
        import select

        with contextlib.suppress(OSError, ValueError):
            ready, _, _ = select.select([self._wake_r], [], [], max(0.0, seconds))
            if ready:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)

    def _run(self, register_first: bool) -> None:
        failures = 0
        wait = 0.0 if register_first else self.interval
        while not self._stop_requested:
            self._sleep(wait)
            if self._stop_requested:
                break
            try:
                if self._registered and not self._resync:
                    self._beat()
                else:
                    self._register()
            except Exception as exc:
                failures += 1
                # Recover through a full registration: the control schema or our row may be
                # what went missing, and the upsert is harmless when nothing did.
                self._resync = True
                self._control_ensured = False
                wait = min(self.interval, BACKOFF_FIRST * 2 ** (failures - 1))
                log.warning(
                    "live_heartbeat_failed",
                    app=self.app,
                    instance=self.id,
                    failures=failures,
                    retry_in=wait,
                    error=first_line(exc),
                )
                continue
            if failures:
                log.info("live_heartbeat_recovered", app=self.app, instance=self.id, failures=failures)
                failures = 0
            wait = self.interval
        self._deregister_with_timeout()
        if self._terminating:
            with self._lock:
                self._running = False
            _running.discard(self)
            if self._reraise_default:
                # Back to the main thread's handler, which now restores SIG_DFL and dies.
                os.kill(os.getpid(), signal.SIGTERM)

    # -- signals and fork -------------------------------------------------------------

    def _install_signal_handler(self) -> None:
        if self._handler_installed:
            return
        if threading.current_thread() is not threading.main_thread():
            _warn_not_main_thread()
            return
        self._previous_handler = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._handler_installed = True

    def _restore_signal_handler(self) -> None:
        if not self._handler_installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._handler_installed = False
        # Otherwise someone chained onto us; our handler stays and just passes signals on.

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_handler
        default = not callable(previous) and previous != signal.SIG_IGN
        thread = self._thread
        pending = self._running and not self._deregistered and thread is not None and thread.is_alive()
        if pending:
            # Set before waking the thread, which reads it once it has deregistered.
            self._reraise_default = default
            self._terminating = True
            self._stop_requested = True
            self._wake()
        if callable(previous):
            previous(signum, frame)
        elif default and not pending:
            # No previous handler and nothing left to do: the default action, i.e. die.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _restart_in_child(self) -> None:
        """After fork(): a new instance (own id, own pid) with its own heartbeat thread."""
        self.id = str(uuid.uuid4())
        self.pid = os.getpid()
        self.started = None
        self._lock = threading.Lock()
        self._registered = False
        self._deregistered = False
        self._resync = False
        self._stop_requested = False
        self._terminating = False
        self._reraise_default = False
        with contextlib.suppress(OSError):
            self._wake_r.close()
            self._wake_w.close()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        if self._engine is not None:
            # The parent's pooled connections must not be used here (SQLAlchemy's advice for
            # forked children); close=False leaves them to the parent.
            self._engine.dispose(close=False)
        self._start_thread(register_first=True)
        log.info("live_forked", app=self.app, instance=self.id, pid=self.pid)
