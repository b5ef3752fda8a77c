"""Config reload as a transaction: plan every change, apply them in order, undo the applied ones on failure.

``plan`` checks everything that can be checked without touching the running
agent (endpoints resolve, key pairs, operator pins) and changes nothing.
``apply`` goes exchange by exchange: mode switches and key swaps first (a mode
switch can be refused: the new source must be ready in time), then restarts and
additions, removals last (undoing a removal means starting the exchange again).
Every applied step leaves an undo; the first failure runs them newest first and
raises ``ReloadUndone``, so the exchanges run as they did before the reload.

An operator pin wins over the file: a pinned exchange keeps its mode and the
result says so (``"pinned: stays rest"``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from agent.config.issues import ReloadError, ReloadUndone
from agent.config.loader import LoadedConfig
from agent.config.models import ExchangeConfig
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.mode.controller import ExchangeController
from agent.mode.pipeline import ModeChangeError
from agent.telemetry.logging import MASKER

log = logging.getLogger("agent.reload")

Connection = Callable[[str, ExchangeConfig, LoadedConfig], tuple[ResolvedEndpoints, ApiCredentials | None]]
Build = Callable[[str, ExchangeConfig, LoadedConfig], ExchangeController]
_ORDER = {"update": 0, "restart": 1, "add": 1, "remove": 2}


@dataclass
class ExchangeChange:
    """What a reload does to one exchange.

    ``update`` keeps the running pipeline: a new ``mode`` (None: no switch), a new
    key pair (``credentials``, None: unchanged), the new config. ``pinned`` is the
    operator's pin that keeps the mode the file asks to change.
    """

    name: str
    kind: Literal["add", "remove", "restart", "update"]
    before: ExchangeConfig | None
    after: ExchangeConfig | None
    mode: str | None = None
    credentials: ApiCredentials | None = None
    pinned: str | None = None

    def describe(self) -> str:
        """One line for the reload result, e.g. ``mode rest -> hybrid`` or ``pinned: stays rest``."""
        parts = {"add": ["added"], "remove": ["removed"], "restart": ["restarted"], "update": []}[self.kind]
        if self.mode is not None and self.before is not None and self.after is not None:
            parts.append(f"mode {self.before.mode} -> {self.after.mode}")
        if self.credentials is not None:
            parts.append("credentials")
        if self.pinned is not None:
            parts.append(f"pinned: stays {self.pinned}")
        return "; ".join(parts) or "updated"


class ReloadTransaction:
    """One reload of the exchanges: ``plan()``, then ``apply()``; ``undo()`` while it is not committed."""

    def __init__(self, controllers: dict[str, ExchangeController], old: LoadedConfig, new: LoadedConfig, *,
                 connection: Connection, build: Build) -> None:
        self._controllers = controllers
        self.old, self.new = old, new
        self._connection = connection
        self._build = build
        self.changes: list[ExchangeChange] = []
        self._undo: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    # -- plan ------------------------------------------------------------------------------------

    def plan(self) -> list[ExchangeChange]:
        """Every change the new config makes; raises ReloadError (having changed nothing) if one cannot work."""
        old_cfg, new_cfg = self.old.config.exchanges, self.new.config.exchanges
        problems: list[str] = []
        for name in sorted(set(old_cfg) | set(new_cfg)):
            before, after = old_cfg.get(name), new_cfg.get(name)
            try:
                change = self._plan_one(name, before, after)
            except ValueError as exc:
                problems.append(f"{self.new.path}: exchanges.{name}: {exc}")
                continue
            if change is not None:
                self.changes.append(change)
        if problems:
            raise ReloadError(problems)
        for change in self.changes:
            if change.pinned is not None:
                log.warning("reload leaves a pinned exchange in its mode", extra={
                    "event": "reload_mode_pinned", "exchange": change.name, "pinned_mode": change.pinned,
                    "configured_mode": change.after.mode if change.after else None})
        self.changes.sort(key=lambda c: (_ORDER[c.kind], c.name))
        return self.changes

    def _plan_one(self, name: str, before: ExchangeConfig | None,
                  after: ExchangeConfig | None) -> ExchangeChange | None:
        if after is None:
            return ExchangeChange(name, "remove", before, None)
        _, credentials = self._connection(name, after, self.new)  # raises ValueError: no endpoints
        if before is None:
            return ExchangeChange(name, "add", None, after)
        controller = self._controllers[name]
        pin = controller.breaker.state.pinned_mode
        pinned = pin if pin is not None and after.mode != pin else None
        if before.model_copy(update={"mode": after.mode}) != after:
            return ExchangeChange(name, "restart", before, after, pinned=pinned)
        new_credentials = credentials if credentials != controller.pipeline.credentials else None
        if new_credentials is not None:
            MASKER.add(new_credentials.api_key, new_credentials.api_secret)
        if before.mode == after.mode:
            pinned = None  # the file does not ask for another mode: the pin is nothing to report
        mode = after.mode if before.mode != after.mode and pinned is None else None
        if before == after and new_credentials is None:
            return None
        return ExchangeChange(name, "update", before, after, mode=mode, credentials=new_credentials, pinned=pinned)

    # -- apply and undo --------------------------------------------------------------------------

    async def apply(self) -> None:
        """Apply every planned change; on the first failure undo the applied ones and raise ReloadUndone."""
        for change in self.changes:
            try:
                await getattr(self, f"_{change.kind}")(change)
            except Exception as exc:  # noqa: BLE001 - whatever failed, the agent goes back to where it was
                if not isinstance(exc, ModeChangeError):
                    log.exception("reload step failed", extra={"event": "reload_step_failed",
                                                               "exchange": change.name})
                detail = str(exc) if isinstance(exc, ModeChangeError) else f"{type(exc).__name__}: {exc}"
                raise ReloadUndone([f"{self.new.path}: exchanges.{change.name}: {detail}",
                                    *await self.undo()]) from exc

    async def undo(self) -> list[str]:
        """Undo every applied step, newest first; lines saying what was undone and what could not be."""
        lines = []
        undone: list[str] = []
        while self._undo:
            name, step = self._undo.pop()
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - keep undoing the rest
                log.exception("reload undo step failed", extra={"event": "reload_undo_failed", "exchange": name})
                lines.append(f"exchanges.{name}: could not be undone: {type(exc).__name__}: {exc}")
            else:
                if name not in undone:
                    undone.append(name)
        if undone:
            lines.insert(0, f"undone: {', '.join(sorted(undone))} run as before the reload")
        return lines

    async def _update(self, change: ExchangeChange) -> None:
        assert change.before is not None and change.after is not None
        controller = self._controllers[change.name]
        before, after = change.before, change.after
        controller.config = controller.pipeline.config = after

        async def restore_config() -> None:
            controller.config = controller.pipeline.config = before
        self._undo.append((change.name, restore_config))
        if change.credentials is not None:
            old_credentials = controller.pipeline.credentials
            await controller.pipeline.set_credentials(change.credentials)

            async def restore_credentials() -> None:
                await controller.pipeline.set_credentials(old_credentials)
            self._undo.append((change.name, restore_credentials))
        if change.mode is not None:
            previous, breaker = controller.pipeline.mode, controller.breaker_snapshot()
            result = await controller.operator_set_mode(change.mode, reason="config_reload")

            async def restore_mode() -> None:
                if result["changed"] and previous is not None:
                    await controller.operator_set_mode(previous, reason="config_reload_undone")
                controller.restore_breaker(breaker)
            self._undo.append((change.name, restore_mode))

    async def _restart(self, change: ExchangeChange) -> None:
        assert change.before is not None
        await self._remove(change)
        await self._add(change)

    async def _add(self, change: ExchangeChange) -> None:
        assert change.after is not None
        controller = self._build(change.name, change.after, self.new)
        self._controllers[change.name] = controller

        async def stop_it() -> None:
            await self._controllers.pop(change.name).stop()
        self._undo.append((change.name, stop_it))
        await controller.start()

    async def _remove(self, change: ExchangeChange) -> None:
        assert change.before is not None
        before = change.before
        stopping = self._controllers.pop(change.name)

        async def start_again() -> None:
            controller = self._build(change.name, before, self.old)
            self._controllers[change.name] = controller
            await controller.start()
        self._undo.append((change.name, start_again))  # before stopping: a stop that fails half way is undone too
        await stopping.stop()

    def result(self) -> dict[str, str]:
        """Per changed exchange, what the reload did to it."""
        return {c.name: c.describe() for c in sorted(self.changes, key=lambda c: c.name)}
