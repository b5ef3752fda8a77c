"""The admin HTTP server: metrics, health, readiness, status and read-only views.

Liveness never depends on exchange health (a sick exchange must not get the
agent restarted); readiness means config loaded and every exchange delivered
its first snapshot.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from pathlib import Path
from typing import Any, Protocol, get_args

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.exposition import choose_encoder

from agent.admin.runtime import bind_failure_reason, listen_address
from agent.config.issues import ReloadError, ReloadUndone
from agent.core.events import Event, encode_event, event_kind
from agent.mode.pipeline import ModeChangeError
from agent.sinks.bus import EventBus, StreamClosed
from agent.telemetry.metrics import Metrics

log = logging.getLogger("agent.admin")


class AdminListenError(Exception):
    """``admin.listen`` could not be bound (taken, not an address of this machine, ...); says which and why."""


class AdminBackend(Protocol):
    """What the admin server reads from the running agent."""

    def is_ready(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...

    def positions(self) -> dict[str, Any]: ...

    def prices(self) -> dict[str, Any]: ...

    def has_exchange(self, name: str) -> bool: ...

    async def set_mode(self, exchange: str, mode: str, *, pin: bool | None, reason: str) -> dict[str, Any]: ...

    async def reload(self, trigger: str = "api") -> dict[str, Any]: ...

    def latest_report(self) -> Path | None: ...


class AdminServer:
    """aiohttp server on ``admin.listen``; ``url`` holds the bound address (port 0 picks one)."""

    def __init__(self, *, host: str, port: int, backend: AdminBackend, metrics: Metrics, bus: EventBus,
                 token: str | None = None) -> None:
        self.token = token  # bearer token for state-changing calls; None refuses them all
        self._host = host
        self._port = port
        self._backend = backend
        self._metrics = metrics
        self._bus = bus
        self._runner: web.AppRunner | None = None
        self._stream_tasks: set[asyncio.Task[object]] = set()
        self.url: str | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/-/healthy", self._healthy)
        app.router.add_get("/-/ready", self._ready)
        app.router.add_get("/status", self._status)
        app.router.add_get("/v1/positions", self._positions)
        app.router.add_get("/v1/prices", self._prices)
        app.router.add_get("/v1/events", self._events)
        app.router.add_get("/v1/reports/latest", self._latest_report)
        app.router.add_post("/v1/exchanges/{name}/mode", self._set_mode)
        app.router.add_post("/-/reload", self._reload)
        return app

    async def start(self) -> None:
        """Bind and serve; safe to call twice."""
        if self._runner is not None:
            return
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await self._runner.cleanup()
            self._runner = None
            raise AdminListenError(f"cannot listen on {listen_address(self._host, self._port)}: "
                                   f"{bind_failure_reason(e, self._host)}") from None
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        port = sockets[0].getsockname()[1] if sockets else self._port
        host = f"[{self._host}]" if ":" in self._host else self._host
        self.url = f"http://{host}:{port}"
        log.info("admin server listening", extra={"event": "admin_listening", "url": self.url})

    async def stop(self) -> None:
        """Close live streams and the listener; safe to call twice."""
        for task in list(self._stream_tasks):  # live streams never end by themselves
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        """OpenMetrics (with exemplars) when the scraper asks for it, else the classic text format."""
        accept = request.headers.get("Accept", "")
        if "application/openmetrics-text" in accept:
            encoder, content_type = choose_encoder(accept)
            return web.Response(body=encoder(self._metrics.registry), headers={"Content-Type": content_type})
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthy(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self._backend.is_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._backend.status(), dumps=_dumps)

    async def _positions(self, request: web.Request) -> web.Response:
        return web.json_response(self._backend.positions(), dumps=_dumps)

    async def _prices(self, request: web.Request) -> web.Response:
        return web.json_response(self._backend.prices(), dumps=_dumps)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Live NDJSON stream of every event from now on, optionally filtered by ``?exchange=`` and ``?kind=``.

        A client too slow to keep up is disconnected; its last line says so (``stream_closed``).
        """
        wanted, kinds, problem = self._event_filters(request)
        if problem is not None:
            return problem
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        queue = self._bus.subscribe()
        task = asyncio.current_task()
        assert task is not None
        self._stream_tasks.add(task)
        try:
            while True:
                event = await queue.get()
                if isinstance(event, StreamClosed):  # the bus dropped this subscriber: say why, then end
                    await response.write(event.to_line())
                    break
                if wanted and getattr(event, "exchange", None) != wanted:
                    continue
                if kinds and event_kind(event) not in kinds:
                    continue
                await response.write(encode_event(event) + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._bus.unsubscribe(queue)
            self._stream_tasks.discard(task)
        return response


    def _event_filters(self, request: web.Request) -> tuple[str | None, set[str], web.Response | None]:
        """``?exchange=NAME`` and ``?kind=K[,K...]``; a name that matches nothing is a 400 listing the
        valid ones (an empty stream would look like a quiet exchange)."""
        wanted = request.query.get("exchange") or None
        if wanted is not None and not self._backend.has_exchange(wanted):
            names = sorted(self._backend.status().get("exchanges", {}))
            return None, set(), web.json_response(
                {"error": f"no exchange named {wanted!r}; valid: {', '.join(names)}", "valid": names}, status=400)
        known = sorted(event_kinds())
        kinds = {k for k in request.query.get("kind", "").split(",") if k}
        unknown = sorted(kinds - set(known))
        if unknown:
            return None, set(), web.json_response(
                {"error": f"unknown event kind {', '.join(map(repr, unknown))}; valid: {', '.join(known)}",
                 "valid": known}, status=400)
        return wanted, kinds, None

    # -- state-changing calls ----------------------------------------------------------------------

    def _refuse(self, request: web.Request) -> web.Response | None:
        """None when the bearer token is right; else the refusal (the token itself is never logged)."""
        if not self.token:
            return _problem(403, "state-changing calls are disabled: no admin token is configured "
                                 "(set the variable named by admin.token_env)")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return _problem(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(header[7:].encode(), self.token.encode()):
            log.warning("admin call with a wrong token", extra={"event": "admin_forbidden", "path": request.path,
                                                                "remote": request.remote})
            return _problem(403, "wrong bearer token")
        return None

    async def _set_mode(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        name = request.match_info["name"]
        body, problem = await _json_body(request, '{"mode": "rest|hybrid|shadow", "pin": true|false}')
        if problem is not None:
            return problem
        mode = body.get("mode") if isinstance(body, dict) else None
        if mode not in ("rest", "hybrid", "shadow"):
            return _problem(400, "mode must be one of rest, hybrid, shadow")
        pin = body.get("pin")
        if pin is not None and not isinstance(pin, bool):
            return _problem(400, "pin must be true (pin), false (unpin) or absent")
        reason = str(body.get("reason") or "operator")[:200]
        if not self._backend.has_exchange(name):
            return _problem(404, f"no exchange named {name!r}")
        try:
            result = await self._backend.set_mode(name, mode, pin=pin, reason=reason)
        except ModeChangeError as exc:
            return _problem(409, str(exc))
        log.warning("operator set mode", extra={"event": "operator_mode", "exchange": name, "mode": mode,
                                                "pin": pin, "reason": reason})
        return web.json_response(result)

    async def _reload(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        body, problem = await _json_body(request, "no body, or {}", empty_ok=True)
        if problem is None and body is not None and not isinstance(body, dict):
            problem = _problem(400, "reload takes no parameters: send no body, or {}")
        if problem is not None:
            return problem
        try:
            result = await self._backend.reload("api")
        except ReloadUndone as exc:  # valid, but the running agent could not take it: conflict, nothing changed
            return web.json_response({"ok": False, "undone": True, "errors": exc.lines}, status=409)
        except ReloadError as exc:
            return web.json_response({"ok": False, "errors": exc.lines}, status=400)
        return web.json_response({"ok": True, **result})

    async def _latest_report(self, request: web.Request) -> web.StreamResponse:
        fmt = request.query.get("format", "json")
        types = {"json": "application/json", "md": "text/markdown; charset=utf-8", "html": "text/html; charset=utf-8"}
        if fmt not in types:
            return _problem(400, "format must be json, md or html")
        latest = self._backend.latest_report()
        path = latest.with_suffix(f".{fmt}") if latest is not None else None
        if path is None or not path.exists():
            return _problem(404, "no shadow report yet (reports are written while an exchange runs in shadow mode)")
        return web.Response(body=path.read_bytes(), headers={"Content-Type": types[fmt]})


async def _json_body(request: web.Request, expected: str, *,
                     empty_ok: bool = False) -> tuple[Any, web.Response | None]:
    """The request's JSON body, or the 400 that says what is wrong with it; never a 500.

    ``json`` bounds nesting by the interpreter's recursion limit and raises
    ``RecursionError`` past it: a body of ten thousand ``[`` is a client error
    like any other bad JSON, not a crash of the handler.
    """
    raw = await request.read()
    if empty_ok and not raw.strip():
        return None, None
    try:
        return json.loads(raw), None
    except RecursionError:
        return None, _problem(400, f"body is JSON nested too deeply to decode; expected {expected}")
    except ValueError:  # bad JSON and bad UTF-8 alike
        return None, _problem(400, f"body must be JSON: {expected}")


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": detail}, status=status, headers=headers)


def event_kinds() -> set[str]:
    """The ``kind`` of every event type of the stream (``position``, ``mark_price``, ...)."""
    return {t.__struct_config__.tag for t in get_args(Event)}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
