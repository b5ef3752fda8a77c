"""``ListenKeyManager``: the one owner of the Binance listenKey (failure-modes rows 3, 4 and 19).

Runs the real ``BinanceRestApi`` against a tiny aiohttp server on 127.0.0.1 that keeps one
listenKey the way Binance does: POST returns the active key (extending it) or a new one, PUT
extends it or answers -1125 when it is gone, DELETE closes it.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from aiohttp import web

from agent.config.models import ExchangeConfig
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.exchanges.binance.listen_key import ListenKeyClosed, ListenKeyManager
from agent.exchanges.binance.rest import BinanceRestApi
from agent.transport.errors import RestError

EXCHANGE = "binance-lk"
TASK = f"{EXCHANGE}/listen-key/keepalive"


class ListenKeyServer:
    """One account's listenKey with knobs: expire it, fail the next calls, count every call."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.calls: list[str] = []
        self.fail_puts = 0
        self.fail_posts = 0
        self.rotate_on_put = False  # answer a PUT with a different key
        self._serial = itertools.count(1)

    def expire(self) -> None:
        self.key = None

    def count(self, method: str) -> int:
        return self.calls.count(method)

    def _new_key(self) -> str:
        return f"key{next(self._serial):03d}".ljust(64, "x")

    async def time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def listen_key(self, request: web.Request) -> web.Response:
        method = request.method
        self.calls.append(method)
        if request.headers.get("X-MBX-APIKEY") != "k" * 64:
            return web.json_response({"code": -2015, "msg": "Invalid API-key"}, status=401)
        if method == "POST":
            if self.fail_posts:
                self.fail_posts -= 1
                return web.json_response({"code": -1001, "msg": "Internal error"}, status=503)
            self.key = self.key or self._new_key()
            return web.json_response({"listenKey": self.key})
        if method == "PUT":
            if self.fail_puts:
                self.fail_puts -= 1
                return web.Response(status=502, text="bad gateway")
            if self.key is None:
                return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
            if self.rotate_on_put:
                self.rotate_on_put = False
                self.key = self._new_key()
            return web.json_response({"listenKey": self.key})
        self.key = None  # DELETE
        return web.json_response({})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/fapi/v1/time", self.time)
        app.router.add_route("*", "/fapi/v1/listenKey", self.listen_key)
        return app


@pytest.fixture
async def server(serve):
    srv = ListenKeyServer()
    srv.url = await serve(srv.app())
    return srv


@pytest.fixture
async def api(server, metrics):
    rest = BinanceRestApi(EXCHANGE, ExchangeConfig(venue="binance"),
                          ResolvedEndpoints(server.url, "ws://127.0.0.1:1/market", "ws://127.0.0.1:1/private"),
                          ApiCredentials("k" * 64, "s" * 64), metrics)
    await rest.start()
    yield rest
    await rest.close()


@pytest.fixture
async def make(api, metrics):
    managers: list[ListenKeyManager] = []

    def build(**kwargs) -> ListenKeyManager:
        values = dict(exchange=EXCHANGE, keepalive_seconds=30.0, validity_seconds=60.0, metrics=metrics,
                      retry_initial_seconds=0.02, retry_max_seconds=0.05)
        values.update(kwargs)
        manager = ListenKeyManager(api, **values)
        managers.append(manager)
        return manager

    yield build
    for manager in managers:
        await manager.close()


def keepalive_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name() == TASK and not t.done()]


async def until(predicate, timeout_seconds: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_current_creates_once_and_reuses(make, server):
    manager = make()
    key = await manager.current()
    assert key == server.key and server.count("POST") == 1
    assert await manager.current() == key and server.count("POST") == 1 and server.count("PUT") == 0
    assert manager.task_names() == [TASK] and len(keepalive_tasks()) == 1


async def test_keepalive_cadence(make, server):
    manager = make(keepalive_seconds=0.1)
    rotations: list[str] = []
    manager.set_rotation_callback(rotations.append)
    key = await manager.current()
    started = time.monotonic()
    await until(lambda: server.count("PUT") >= 4)
    elapsed = time.monotonic() - started
    assert 0.35 <= elapsed <= 1.5  # one PUT per keepalive_seconds, not a burst
    assert manager.key == key and rotations == [] and server.count("POST") == 1
    assert manager.keepalives >= 4 and manager.key_age_seconds < 0.2


async def test_default_keepalive_is_well_inside_the_hour(api):
    manager = ListenKeyManager(api, exchange=EXCHANGE)
    assert manager.keepalive_seconds == 1800.0 < manager.validity_seconds == 3600.0
    with pytest.raises(ValueError):
        ListenKeyManager(api, exchange=EXCHANGE, keepalive_seconds=3600.0)


async def test_gone_key_is_replaced_and_the_stream_rotated(make, server):
    manager = make(keepalive_seconds=0.05)
    rotations: list[str] = []
    manager.set_rotation_callback(rotations.append)
    old = await manager.current()
    server.expire()  # the next PUT answers -1125
    await until(lambda: rotations)
    assert rotations == ["not_found"]
    new = await manager.current()
    assert new != old and new == server.key and manager.rotations == 1


async def test_failed_keepalive_asks_for_the_active_key_without_rotating_when_it_is_the_same(make, server):
    manager = make(keepalive_seconds=0.05)
    rotations: list[str] = []
    manager.set_rotation_callback(rotations.append)
    key = await manager.current()
    server.fail_puts = 1
    await until(lambda: server.count("POST") == 2)
    await until(lambda: server.count("PUT") >= 3)  # back on the normal schedule
    assert manager.key == key and rotations == []


async def test_a_key_change_reported_by_the_keepalive_rotates(make, server):
    manager = make(keepalive_seconds=0.05)
    rotations: list[str] = []
    manager.set_rotation_callback(rotations.append)
    old = await manager.current()
    server.rotate_on_put = True
    await until(lambda: rotations)
    assert rotations == ["key_changed"] and manager.key == server.key != old


async def test_renewal_retries_until_a_key_can_be_had_then_rotates_once(make, server):
    manager = make(keepalive_seconds=0.05)
    rotations: list[str] = []
    manager.set_rotation_callback(rotations.append)
    await manager.current()
    server.expire()
    server.fail_posts = 3
    await until(lambda: rotations, timeout_seconds=5.0)
    assert rotations == ["not_found"] and server.count("POST") == 1 + 4
    assert manager.key == server.key and len(keepalive_tasks()) == 1


async def test_task_count_stays_one(make, server):
    """Failure-modes row 19: no duplicated keepalive loops, whatever happens."""
    manager = make(keepalive_seconds=0.05)
    keys = await asyncio.gather(*(manager.current() for _ in range(20)))
    assert len(set(keys)) == 1 and server.count("POST") == 1  # concurrent callers share one key
    for _ in range(3):
        await manager.start()
        manager.on_expired()
        await manager.current()
        server.expire()
        await until(lambda: manager.key is not None and manager.key == server.key)
        assert len(keepalive_tasks()) == 1 and manager.task_names() == [TASK]
    await manager.close()
    assert keepalive_tasks() == [] and manager.task_names() == []


async def test_listen_key_expired_notice_makes_the_next_connect_get_a_fresh_key(make, server):
    manager = make()
    old = await manager.current()
    manager.on_expired("an-older-key")  # about a key we no longer use: ignored
    assert manager.key == old
    server.expire()
    manager.on_expired(old)
    assert manager.key is None
    new = await manager.current()
    assert new != old and new == server.key
    manager.on_expired(None)  # a notice without ``listenKey`` (seen in 2021): drop to be safe
    assert manager.key is None and await manager.current() == new  # POST returns the active key


async def test_connect_after_a_while_confirms_the_key_first(make, server):
    manager = make(revalidate_after_seconds=0.05)
    old = await manager.current()
    await asyncio.sleep(0.06)
    assert await manager.current() == old and server.count("PUT") == 1
    server.expire()
    await asyncio.sleep(0.06)
    new = await manager.current()  # PUT -1125, then POST: never a dead key
    assert new != old and server.count("PUT") == 2 and server.count("POST") == 2


async def test_reconnect_revalidates_even_a_fresh_key(make, server):
    manager = make()
    old = await manager.current()
    assert await manager.current(revalidate=True) == old and server.count("PUT") == 1
    server.expire()  # e.g. the venue refused the last connect for this key
    new = await manager.current(revalidate=True)
    assert new != old and server.count("PUT") == 2 and server.count("POST") == 2


async def test_connect_with_rest_down_uses_a_key_inside_its_validity(make, server):
    manager = make(revalidate_after_seconds=0.0)
    key = await manager.current()
    server.fail_puts = 1
    assert await manager.current() == key and manager.last_error == "keepalive: ExchangeUnavailable"


async def test_no_key_no_url(make, server):
    manager = make()
    server.fail_posts = 1
    with pytest.raises(RestError):
        await manager.current()
    assert manager.key is None
    assert await manager.current() == server.key


async def test_close_stops_the_task_and_can_delete_the_key(make, server):
    manager = make()
    await manager.current()
    await manager.close(delete=True)
    assert manager.task_names() == [] and server.key is None and server.count("DELETE") == 1
    with pytest.raises(ListenKeyClosed):
        await manager.current()
    await manager.close()  # twice is fine
    await manager.start()
    assert await manager.current() == server.key


async def test_key_age_metric(make, server, metrics):
    manager = make()
    sample = lambda: metrics.registry.get_sample_value(  # noqa: E731
        "feedagent_ws_listen_key_age_seconds", {"exchange": EXCHANGE})
    assert sample() == 0.0  # no key yet
    await manager.current()
    await asyncio.sleep(0.05)
    assert 0.04 <= sample() < 1.0
    manager.on_expired()
    assert sample() == 0.0


async def test_close_right_after_a_key_change_is_prompt(make, server):
    """Regression: with ``asyncio.wait_for`` (3.11) a cancel landing as the wake-up fired was swallowed."""
    for _ in range(5):
        manager = make()
        await manager.current()
        await asyncio.sleep(0.01)
        manager.on_expired()
        started = time.monotonic()
        await manager.close()
        assert time.monotonic() - started < 1.0 and keepalive_tasks() == []
