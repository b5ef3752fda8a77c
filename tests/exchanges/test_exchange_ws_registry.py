"""The WebSocket side of the venue registry: ``create_ws_protocols`` and the topic helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import agent.exchanges as exchanges
from agent.config.models import ExchangeConfig
from agent.exchanges import (
    REST_APIS, WS_FACTORIES, create_rest_api, create_ws_protocols, create_ws_venue, mark_price_topic,
    position_topics, symbol_of_topic,
)
from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
from agent.exchanges.binance.listen_key import ListenKeyManager
from agent.exchanges.binance.ws import BinanceMarketProtocol, BinancePrivateProtocol
from agent.exchanges.binance.ws_parse import AccountPositionCache, MarkPriceCache
from agent.exchanges.bybit.ws import BybitPrivateProtocol, BybitPublicProtocol
from agent.exchanges.bybit.ws_parse import BybitPositionReader, TickerCache
from agent.telemetry.metrics import Metrics
from agent.transport.ws_spec import Data, ServerNotice, WsProtocol

WS_FILES = {"ws.py", "ws_parse.py"}
CREDS = ApiCredentials("k" * 64, "s" * 64)
ENDPOINTS = {
    "bybit": ResolvedEndpoints("http://127.0.0.1:1", "ws://127.0.0.1:1/v5/public/linear",
                               "ws://127.0.0.1:1/v5/private"),
    "binance": ResolvedEndpoints("http://127.0.0.1:1", "ws://127.0.0.1:1/market", "ws://127.0.0.1:1/private"),
}


def build(venue: str, credentials: ApiCredentials | None = CREDS, **config):
    cfg = ExchangeConfig(venue=venue, **config)
    metrics = Metrics(CollectorRegistry())
    rest = create_rest_api(f"{venue}-main", cfg, ENDPOINTS[venue], credentials, metrics)
    return create_ws_protocols(f"{venue}-main", cfg, ENDPOINTS[venue], credentials, rest, metrics=metrics), rest


def test_every_venue_has_a_ws_factory_and_the_same_ws_files():
    assert set(WS_FACTORIES) == set(REST_APIS)
    root = Path(exchanges.__file__).parent
    for venue in WS_FACTORIES:
        assert WS_FILES <= {p.name for p in (root / venue).glob("*.py")}, venue


async def test_bybit_side():
    ws, rest = build("bybit", ws={"stale_after_seconds": 3.0})
    assert isinstance(ws.public, BybitPublicProtocol) and isinstance(ws.private, BybitPrivateProtocol)
    assert isinstance(ws.public, WsProtocol) and isinstance(ws.private, WsProtocol)
    assert ws.listen_keys is None and (ws.public_stream, ws.private_stream) == ("public", "private")
    assert ws.public.stale_after_seconds("tickers.BTCUSDT") == 3.0
    assert await ws.public.url() == ENDPOINTS["bybit"].ws_public_url
    assert isinstance(ws.new_mark_price_reader(), TickerCache)
    assert isinstance(ws.new_position_reader(), BybitPositionReader)
    # auth ``expires`` follows the REST client's server clock
    rest.client.server_clock.offset_ms = 120_000.0
    expires = ws.private.auth_expires_ms(0)
    assert abs(expires - (rest.client.server_clock.server_now_ms() + 5_000)) < 1_000
    await ws.close()


async def test_binance_side():
    ws, rest = build("binance", ws={"stale_after_seconds": 4.0, "listen_key_keepalive_seconds": 1200.0})
    assert isinstance(ws.public, BinanceMarketProtocol) and isinstance(ws.private, BinancePrivateProtocol)
    assert isinstance(ws.listen_keys, ListenKeyManager) and ws.private.listen_keys is ws.listen_keys
    assert ws.listen_keys.keepalive_seconds == 1200.0 and ws.listen_keys.exchange == "binance-main"
    assert (ws.public_stream, ws.private_stream) == ("market", "private")
    assert await ws.public.url() == "ws://127.0.0.1:1/market/stream"
    assert ws.public.stale_after_seconds("btcusdt@markPrice@1s") == 4.0
    assert isinstance(ws.new_mark_price_reader(), MarkPriceCache)
    assert isinstance(ws.new_position_reader(), AccountPositionCache)
    assert ws.mark_price_topic("BTCUSDT") == "btcusdt@markPrice@1s"
    await ws.close()
    assert ws.listen_keys.task_names() == []


@pytest.mark.parametrize("venue", sorted(WS_FACTORIES))
def test_without_credentials_only_the_public_stream(venue):
    ws, _ = build(venue, credentials=None)
    assert ws.public is not None and ws.private is None and ws.listen_keys is None


def test_readers_are_new_each_time():
    ws, _ = build("bybit")
    assert ws.new_mark_price_reader() is not ws.new_mark_price_reader()


def test_topic_helpers_per_venue():
    assert mark_price_topic("bybit", "BTCUSDT") == "tickers.BTCUSDT"
    assert mark_price_topic("binance", "BTCUSDT") == "btcusdt@markPrice@1s"
    for venue in WS_FACTORIES:
        assert symbol_of_topic(venue, mark_price_topic(venue, "ETHUSDT")) == "ETHUSDT"
        assert symbol_of_topic(venue, position_topics(venue)[0]) is None
    assert position_topics("bybit") == ("position",)
    assert position_topics("binance") == ("ACCOUNT_UPDATE", "ACCOUNT_CONFIG_UPDATE")
    with pytest.raises(ValueError, match="unknown venue"):
        mark_price_topic("kraken", "BTCUSD")


def test_unknown_venue_is_refused():
    cfg = ExchangeConfig.model_construct(venue="kraken")
    with pytest.raises(ValueError, match="no WebSocket adapter"):
        create_ws_protocols("k", cfg, ENDPOINTS["bybit"], None)


# -- the per-exchange facade a hybrid/shadow source drives ------------------------------------------------


def test_bybit_facade_parses_counts_and_keeps_deltas_uncoalesced(fixture_bytes):
    ws, _ = build("bybit")
    assert ws.private_topics() == ("position",) and ws.connection_budget[0] <= 500
    assert not ws.public_is_streaming("tickers.ETHUSDT")  # a delta holds only what changed: never coalesce
    snapshot = ws.public.classify(fixture_bytes("ws_bybit_tickers_snapshot.json").decode())
    no_mark = ws.public.classify(fixture_bytes("ws_bybit_tickers_delta_no_mark.json").decode())
    assert [p.mark_price for p in ws.parse_public(snapshot.topic, snapshot.payload)] == ["3421.51"]
    assert ws.parse_public(no_mark.topic, no_mark.payload) == []
    ws.forget_public_topic("tickers.ETHUSDT")
    assert "ETHUSDT" not in ws.mark_prices
    bad = ws.public.classify('{"topic":"tickers.ETHUSDT","type":"delta","data":{"markPrice":"x"},"ts":1732100000000}')
    assert ws.parse_public(bad.topic, bad.payload) == []
    assert ws.metrics.registry.get_sample_value("feedagent_messages_malformed_total",
                                                {"exchange": "bybit-main", "source": "ws"}) == 1
    closed = ws.private.classify(fixture_bytes("ws_bybit_position_closed.json").decode())
    [row] = ws.parse_private(closed.topic, closed.payload)
    assert not row.is_open and ws.status()["ws_venue"]["duplicates_ignored"] == 0


async def test_binance_facade_seeds_merges_and_handles_the_expiry_notice(fixture_bytes):
    rotations = []
    cfg = ExchangeConfig(venue="binance")
    metrics = Metrics(CollectorRegistry())
    rest = create_rest_api("binance-main", cfg, ENDPOINTS["binance"], CREDS, metrics)
    ws = create_ws_venue("binance-main", cfg, ENDPOINTS["binance"], CREDS, rest, metrics,
                         on_rotation_needed=lambda: rotations.append(1))
    assert ws.public_is_streaming("btcusdt@markPrice@1s") and not ws.public_is_streaming("btcusdt@aggTrade")
    assert ws.private_topics() == ("ACCOUNT_UPDATE", "ACCOUNT_CONFIG_UPDATE")
    ws.listen_keys._on_rotate("not_found")  # what the key owner calls after replacing the key
    assert rotations == [1]

    from agent.core.observations import PositionObs
    ws.seed_private([PositionObs(symbol="ETHUSDT", position_idx=0, side="short", size="1", leverage="7",
                                 ts_exchange_ms=1732100000000)])
    update = ws.private.classify(fixture_bytes("ws_binance_account_update_oneway.json").decode())
    assert isinstance(update, Data)
    [row] = ws.parse_private(update.topic, update.payload)
    assert (row.size, row.leverage) == ("2.500", "7")

    ws.listen_keys._set_key("a" * 64, "test")
    notice = ws.private.classify(fixture_bytes("ws_binance_listen_key_expired_string_e.json").decode())
    assert isinstance(notice, ServerNotice)
    ws.on_notice(notice)  # after the protocol already told the key owner: idempotent
    assert ws.listen_keys.key is None and ws.listen_keys.expired_notices == 1
    assert ws.status()["ws_venue"]["last_notice"] == "listenKeyExpired"
    assert ws.status()["ws_venue"]["listen_key"]["expired_notices"] == 1
    await ws.start()
    await ws.stop()
    assert ws.listen_keys.task_names() == []
