"""A small HTTP/1.1 JSON server on asyncio streams (standard library only), keep-alive included.

Routes (``via`` is ``orm`` or ``core``, default ``orm``):

    GET  /healthz                       readiness (schema_ready): 200, or 503 with what is missing
    GET  /accounts?after=0&limit=50     list (Core)
    GET  /accounts/<id>?via=...         read one
    POST /accounts?via=...              create: {"<name column>": "...", "email": "..."}
    PUT  /accounts/<id>?via=...         update: {"<name column>": "..."}

A database error answers 500 with the error's first line: the zero-downtime test counts those.
On SIGTERM it stops accepting, finishes the requests in flight, closes idle connections and
only then deregisters (the ``async with`` around the server), so the instance stays live for
as long as this version's code can still touch the database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .service import Service

REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Server:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.stopping = asyncio.Event()
        self.idle: set[asyncio.StreamWriter] = set()
        self.busy = 0

    async def route(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        via = query.get("via", "orm")
        path = parts.path.rstrip("/")
        if path == "/healthz" and method == "GET":
            return await self.service.health()
        if path == "/accounts" and method == "GET":
            rows = await self.service.list_accounts(int(query.get("after", 0)), int(query.get("limit", 50)))
            return 200, {"accounts": rows}
        if path == "/accounts" and method == "POST":
            return 201, await self.service.create_account(json.loads(body), via)
        if path.startswith("/accounts/"):
            account_id = int(path.rsplit("/", 1)[1])
            if method == "GET":
                found = await self.service.get_account(account_id, via)
                return (200, found) if found is not None else (404, {"error": "not found"})
            if method == "PUT":
                updated = await self.service.update_account(account_id, json.loads(body), via)
                return (200, {"updated": updated}) if updated else (404, {"error": "not found"})
        return 404, {"error": "not found"}

    async def respond(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        try:
            return await self.route(method, target, body)
        except (ValueError, KeyError) as exc:
            return 400, {"error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # a database error: the client sees it, and so does stderr
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            sys.stderr.write(f"ERROR {method} {target}: {type(exc).__name__}: {first}\n")
            return 500, {"error": f"{type(exc).__name__}: {first}"}

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while not self.stopping.is_set():
                self.idle.add(writer)
                line = await reader.readline()
                self.idle.discard(writer)
                if not line.strip():
                    break
                self.busy += 1
                try:
                    method, target, _ = line.decode("latin-1").split(" ", 2)
                    headers: dict[str, str] = {}
                    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                        key, _, value = header.decode("latin-1").partition(":")
                        headers[key.strip().lower()] = value.strip()
                    body = await reader.readexactly(int(headers.get("content-length") or 0))
                    status, doc = await self.respond(method, target, body)
                    payload = json.dumps(doc).encode()
                    close = self.stopping.is_set() or headers.get("connection", "").lower() == "close"
                    writer.write(
                        f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(payload)}\r\nConnection: {'close' if close else 'keep-alive'}"
                        "\r\n\r\n".encode()
                        + payload
                    )
                    await writer.drain()
                finally:
                    self.busy -= 1
                if close:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.idle.discard(writer)
            writer.close()

    async def serve(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        server = await asyncio.start_server(self.connection, host, port)
        bound = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"LISTENING {bound}\n")
        sys.stdout.flush()
        await self.stopping.wait()
        # Drain: no new connections, requests in flight finish, idle keep-alive connections close.
        server.close()
        for writer in list(self.idle):
            writer.close()
        for _ in range(200):
            if not self.busy:
                break
            await asyncio.sleep(0.05)
