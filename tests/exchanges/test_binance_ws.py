"""Binance USDⓈ-M WebSocket adapter: market and user-data classification, requests, mark prices,
the account position cache.

Own fixtures (tests/fixtures/exchanges/ws_binance_*.json) first; then the reference payloads and the
recorded captures in ../shared/reference/payloads (skipped when absent); then one end-to-end run of
``ResilientWebSocket`` with these protocols against the simulator. The listenKey owner has its own
file (test_binance_ws_listen_key.py).
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.core.observations import PositionObs
from agent.exchanges.binance.parse import parse_position_risk
from agent.exchanges.binance.schemas import (
    BinanceAccountConfigUpdateMsg, BinanceAccountUpdateMsg, BinanceListenKeyExpiredMsg, BinanceMarkPriceMsg,
    BinanceWsEnvelope,
)
from agent.exchanges.binance.ws import MAX_STREAMS_PER_CONNECTION, BinanceMarketProtocol, BinancePrivateProtocol
from agent.exchanges.binance.ws_parse import (
    AccountPositionCache, MalformedFrame, MarkPriceCache, decode_mark_prices, expired_at_ms, mark_price_topic,
    parse_mark_price, position_topics, symbol_of_topic,
)
from agent.exchanges.parsing import MalformedRow
from agent.transport.ws_spec import Data, ServerNotice, SubscribeAck, Unknown, WsProtocol

MARKET_URL = "wss://fstream.binance.com/market"
PRIVATE_URL = "wss://fstream.binance.com/private"
CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "payloads" / "captures"


class FakeKeys:
    """Stands in for ``ListenKeyManager`` where only ``current``/``on_expired`` matter."""

    def __init__(self, key: str = "k" * 60) -> None:
        self.key: str | None = key
        self.expired: list[str | None] = []
        self.revalidations: list[bool] = []

    async def current(self, *, revalidate: bool = False) -> str:
        assert self.key is not None
        self.revalidations.append(revalidate)
        return self.key

    def on_expired(self, listen_key: str | None = None) -> None:
        self.expired.append(listen_key)


@pytest.fixture
def frame(fixture_bytes):
    return lambda name: fixture_bytes(name).decode()


@pytest.fixture
def market() -> BinanceMarketProtocol:
    return BinanceMarketProtocol(MARKET_URL)


@pytest.fixture
def keys() -> FakeKeys:
    return FakeKeys()


@pytest.fixture
def private(keys) -> BinancePrivateProtocol:
    return BinancePrivateProtocol(PRIVATE_URL, keys)  # type: ignore[arg-type]


def events_of(result) -> tuple[BinanceMarkPriceMsg, ...]:
    assert isinstance(result, Data) and isinstance(result.payload, tuple)
    return result.payload


# -- market stream: URL, requests, classification --------------------------------------------------------


async def test_market_url_is_the_routed_combined_base():
    assert await BinanceMarketProtocol(MARKET_URL + "/").url() == "wss://fstream.binance.com/market/stream"


def test_protocols_satisfy_the_contract(market, private):
    assert isinstance(market, WsProtocol) and isinstance(private, WsProtocol)
    assert market.ping_request(0) is None and private.ping_request(0) is None  # server pings with frames
    assert market.auth_request(0) is None and private.auth_request(0) is None
    assert market.max_messages_per_second <= 5  # Binance: 10 incoming/s, pongs included


def test_subscribe_requests(market):
    [req] = market.subscribe_requests(["btcusdt@markPrice@1s", "ethusdt@markPrice@1s"])
    body = json.loads(req.text)
    assert body == {"method": "SUBSCRIBE", "params": ["btcusdt@markPrice@1s", "ethusdt@markPrice@1s"],
                    "id": int(req.request_id)}
    [unsub] = market.unsubscribe_requests(["btcusdt@markPrice@1s"])
    body = json.loads(unsub.text)
    assert body["method"] == "UNSUBSCRIBE" and body["id"] == int(unsub.request_id) > int(req.request_id)


def test_1024_streams_fit_and_are_batched(market):
    topics = [mark_price_topic(f"S{i:04d}USDT") for i in range(MAX_STREAMS_PER_CONNECTION)]
    assert market.fits(topics) and not market.fits([*topics, "extra@markPrice@1s"])
    requests = market.subscribe_requests(topics)
    assert [t for r in requests for t in r.topics] == topics
    assert all(len(json.loads(r.text)["params"]) <= 200 for r in requests)
    assert len(requests) == 6  # 1024 streams in six messages, sent at the protocol's pace
    assert all(isinstance(json.loads(r.text)["id"], int) for r in requests)


def test_stream_names_are_lower_case():
    assert mark_price_topic("BTCUSDT") == "btcusdt@markPrice@1s"
    assert mark_price_topic("BTCUSDT", fast=False) == "btcusdt@markPrice"
    assert BinanceMarketProtocol(MARKET_URL, fast=False).mark_price_topic("ETHUSDT") == "ethusdt@markPrice"
    assert symbol_of_topic("btcusdt@markPrice@1s") == "BTCUSDT" == symbol_of_topic("btcusdt@markPrice")
    assert symbol_of_topic("!markPrice@arr@1s") is None and symbol_of_topic("btcusdt@aggTrade") is None
    assert position_topics() == ("ACCOUNT_UPDATE", "ACCOUNT_CONFIG_UPDATE")


def test_staleness_of_mark_price_streams(market):
    assert market.stale_after_seconds("btcusdt@markPrice@1s") == 5.0
    assert market.stale_after_seconds("btcusdt@markPrice") == 9.0  # 3 s pushes: at least three intervals
    assert market.stale_after_seconds("!markPrice@arr@1s") == 5.0
    assert market.stale_after_seconds("btcusdt@aggTrade") is None


def test_combined_wrapper(market, frame):
    result = market.classify(frame("ws_binance_markprice_combined.json"))
    [event] = events_of(result)
    assert result.topic == "ethusdt@markPrice@1s" and event.s == "ETHUSDT" and event.ap


def test_bare_event_gets_the_topic_of_its_symbol(market, frame):
    result = market.classify(frame("ws_binance_markprice_bare.json"))
    assert result.topic == "ethusdt@markPrice@1s" and len(events_of(result)) == 1


def test_arrays_bare_and_combined(market, frame):
    bare = market.classify(frame("ws_binance_markprice_arr.json"))
    assert bare.topic == "!markPrice@arr@1s" and [e.s for e in events_of(bare)] == ["ETHUSDT", "SOLUSDT"]
    combined = market.classify(frame("ws_binance_markprice_arr_combined.json"))
    assert combined.topic == "!markPrice@arr@1s" and len(events_of(combined)) == 2


def test_answers_and_errors(market, frame):
    assert market.classify(frame("ws_binance_subscribe_ack.json")) == SubscribeAck("7", True)
    assert market.classify(frame("ws_binance_list_subscriptions_answer.json")) == SubscribeAck("8", True)
    assert market.classify(frame("ws_binance_request_error.json")) == SubscribeAck(
        "9", False, "code 2: Invalid request: too many streams; at most 1024 per connection")
    no_id = market.classify(frame("ws_binance_request_error_no_id.json"))
    assert isinstance(no_id, SubscribeAck) and no_id.request_id is None and not no_id.ok


def test_other_streams_and_unknown_shapes(market, frame):
    trade = market.classify(frame("ws_binance_aggtrade_combined.json"))
    assert isinstance(trade, Data) and trade.topic == "ethusdt@aggTrade"
    assert MarkPriceCache().read(trade.topic, trade.payload) == ([], 0)
    assert isinstance(market.classify('{"e":"aggTrade","E":1,"s":"ETHUSDT"}'), Unknown)
    assert isinstance(market.classify('{"hello":"world"}'), Unknown)


@pytest.mark.parametrize("text", ["nope", '{"stream":"ethusdt@markPrice@1s","data":{"p":"1"}}',
                                  '{"stream":"ethusdt@markPrice@1s","data":"x"}', '"text"', "[1"])
def test_malformed_market_frames_raise_for_the_connection_to_count(market, text):
    with pytest.raises(MalformedFrame):
        market.classify(text)


@pytest.mark.parametrize("text", ['{"stream":"!markPrice@arr@1s","data":[1]}', "[1]"])
def test_malformed_array_items_are_counted_by_the_reader(market, text):
    result = market.classify(text)
    assert MarkPriceCache().read(result.topic, result.payload) == ([], 1)


# -- mark prices ------------------------------------------------------------------------------------


def test_parse_mark_price(frame):
    [event] = decode_mark_prices(json.dumps(json.loads(frame("ws_binance_markprice_combined.json"))["data"]))
    obs = parse_mark_price(event)
    assert (obs.symbol, obs.mark_price, obs.index_price, obs.funding_rate, obs.ts_exchange_ms) == \
        ("ETHUSDT", "3421.62000000", "3422.11954545", "0.00008711", 1732100005000)


def test_delivery_symbols_have_no_funding_rate(market, frame):
    [event] = events_of(market.classify(frame("ws_binance_markprice_delivery.json")))
    obs = parse_mark_price(event)
    assert obs.symbol == "ETHUSDT_241227" and obs.mark_price == "3470.40000000" and obs.funding_rate is None
    _, dated = events_of(market.classify(frame("ws_binance_markprice_arr_combined.json")))
    assert parse_mark_price(dated).funding_rate is None  # r "" and T 0


def test_mark_price_edge_cases():
    assert parse_mark_price(BinanceMarkPriceMsg(e="aggTrade")) is None
    with pytest.raises(MalformedRow):
        parse_mark_price(BinanceMarkPriceMsg(e="markPriceUpdate", s="ETHUSDT", p=""))
    with pytest.raises(MalformedRow):
        parse_mark_price(BinanceMarkPriceMsg(e="markPriceUpdate", s="", p="1"))
    obs = parse_mark_price(BinanceMarkPriceMsg(e="markPriceUpdate", E="1732100005000", s="ETHUSDT", p="1", i=""))
    assert obs.ts_exchange_ms == 1732100005000 and obs.index_price is None  # E as a string, blank index


def test_mark_price_cache_drops_old_and_duplicate_events(market, frame):
    cache = MarkPriceCache()
    combined = market.classify(frame("ws_binance_markprice_combined.json"))
    later = market.classify(frame("ws_binance_markprice_bare.json"))
    assert len(cache.read(combined.topic, combined.payload)[0]) == 1
    assert len(cache.read(later.topic, later.payload)[0]) == 1
    assert cache.read(later.topic, later.payload) == ([], 0)  # the other connection of a rotation
    assert cache.read(combined.topic, combined.payload) == ([], 0)  # late: older E
    assert cache.duplicates == 2
    cache.reset(["ethusdt@markPrice@1s"])
    assert len(cache.read(combined.topic, combined.payload)[0]) == 1


def test_mark_price_cache_counts_malformed_events_and_keeps_the_rest(market):
    payload = (BinanceMarkPriceMsg(e="markPriceUpdate", E=SEED_TS, s="ETHUSDT", p="junk"),
               BinanceMarkPriceMsg(e="markPriceUpdate", E=SEED_TS, s="SOLUSDT", p="238.1"))
    marks, malformed = MarkPriceCache().read("!markPrice@arr@1s", payload)
    assert malformed == 1 and [m.symbol for m in marks] == ["SOLUSDT"]


def test_one_broken_array_item_costs_only_itself(market):
    text = json.dumps({"stream": "!markPrice@arr@1s", "data": [
        {"e": "markPriceUpdate", "E": SEED_TS, "s": "ETHUSDT", "p": "1.5", "T": 9},
        {"e": "markPriceUpdate", "E": SEED_TS, "s": "SOLUSDT", "p": 238.4},  # a number where a string belongs
        {"E": SEED_TS, "s": "XRPUSDT", "p": "2.1"}]})  # no event type
    result = market.classify(text)
    marks, malformed = MarkPriceCache().read(result.topic, result.payload)
    assert [m.symbol for m in marks] == ["ETHUSDT"] and malformed == 2


def test_mark_price_cache_distrusts_future_times():
    cache = MarkPriceCache()
    received = 1_732_100_000_000
    bogus = BinanceMarkPriceMsg(e="markPriceUpdate", E=received + 10**9, s="ETHUSDT", p="1")
    assert cache.apply(bogus, received_ms=received).ts_exchange_ms is None and cache.implausible == 1
    normal = BinanceMarkPriceMsg(e="markPriceUpdate", E=received, s="ETHUSDT", p="2")
    assert cache.apply(normal, received_ms=received).mark_price == "2"


# -- user data stream -------------------------------------------------------------------------------


async def test_private_url_takes_the_current_listen_key(private, keys):
    assert await private.url() == f"{PRIVATE_URL}/ws/{keys.key}"
    assert await private.url() == f"{PRIVATE_URL}/ws/{keys.key}"
    assert keys.revalidations == [False, True]  # every reconnect confirms the key first
    assert private.subscribe_requests(["ACCOUNT_UPDATE"]) == [] and private.unsubscribe_requests(["x"]) == []
    assert private.stale_after_seconds("ACCOUNT_UPDATE") is None


def test_user_events_are_data_by_event_type(private, frame):
    update = private.classify(frame("ws_binance_account_update_oneway.json"))
    assert update.topic == "ACCOUNT_UPDATE" and isinstance(update.payload, BinanceAccountUpdateMsg)
    config = private.classify(frame("ws_binance_account_config_update.json"))
    assert config.topic == "ACCOUNT_CONFIG_UPDATE" and isinstance(config.payload, BinanceAccountConfigUpdateMsg)
    order = private.classify(frame("ws_binance_order_trade_update.json"))
    assert order.topic == "ORDER_TRADE_UPDATE" and isinstance(order.payload, BinanceWsEnvelope)


def test_combined_user_data_wrapper(private, frame):
    event = json.loads(frame("ws_binance_account_update_oneway.json"))
    wrapped = private.classify(json.dumps({"stream": "k" * 60, "data": event}))
    assert wrapped.topic == "ACCOUNT_UPDATE" and isinstance(wrapped.payload, BinanceAccountUpdateMsg)


@pytest.mark.parametrize(("name", "key", "at_ms"), [
    ("ws_binance_listen_key_expired.json", "qV3pZr8yLk2Tn5Wm0Xb7Cd4Fh6Jg9Ks1Lq3Mp5No7Pr9St1Uv3Wx5Yz7Ab9Cd1Ef",
     1732103600021),
    ("ws_binance_listen_key_expired_string_e.json", None, 1732103600021),  # E a string, no listenKey
])
def test_listen_key_expired_is_a_reconnect_notice(private, keys, frame, name, key, at_ms):
    notice = private.classify(frame(name))
    assert isinstance(notice, ServerNotice) and notice.kind == "listenKeyExpired" and notice.action == "reconnect"
    assert isinstance(notice.payload, BinanceListenKeyExpiredMsg) and expired_at_ms(notice.payload) == at_ms
    assert keys.expired == [key]  # the key's owner hears of it even if nobody wired ``on_notice``


def test_private_unknown_shapes(private):
    assert isinstance(private.classify('{"code":-1125,"msg":"This listenKey does not exist."}'), Unknown)
    assert isinstance(private.classify('{"result":null,"id":1}'), Unknown)
    with pytest.raises(MalformedFrame):
        private.classify('{"e":"ACCOUNT_UPDATE","a":{"P":"x"}}')


# -- account position cache -----------------------------------------------------------------------------


def account_update(private: BinancePrivateProtocol, text: str) -> BinanceAccountUpdateMsg:
    result = private.classify(text)
    assert isinstance(result, Data) and isinstance(result.payload, BinanceAccountUpdateMsg)
    return result.payload


def update(rows: list[dict], *, E: int | str, T: int | str | None = None, m: str = "ORDER") -> str:  # noqa: N803
    event = {"e": "ACCOUNT_UPDATE", "E": E, "a": {"m": m, "B": [], "P": rows}}
    if T is not None:
        event["T"] = T
    return json.dumps(event)


def row(symbol: str, pa: str, ps: str = "BOTH", ep: str = "100.0", up: str = "0") -> dict:
    return {"s": symbol, "pa": pa, "ep": ep, "bep": ep, "cr": "0", "up": up, "mt": "cross", "iw": "0", "ps": ps}


SEED_TS = 1732100000000


def seed_row(symbol: str, idx: int, side, size: str, **kw) -> PositionObs:
    values = dict(entry_price="3400.0", mark_price="3410.0", unrealized_pnl="25.0", leverage="10",
                  liquidation_price="2900.5", ts_exchange_ms=SEED_TS)
    values.update(kw)
    return PositionObs(symbol=symbol, position_idx=idx, side=side, size=size, **values)


def test_one_way_update_keeps_leverage_and_drops_liquidation_after_a_size_change(private, frame):
    cache = AccountPositionCache()
    cache.seed([seed_row("ETHUSDT", 0, "short", "1.000")])
    changed, malformed = cache.apply(account_update(private, frame("ws_binance_account_update_oneway.json")))
    assert malformed == 0
    [obs] = changed
    assert (obs.symbol, obs.position_idx, obs.side, obs.size, obs.entry_price, obs.unrealized_pnl) == \
        ("ETHUSDT", 0, "short", "2.500", "3418.20", "-8.27750000")
    assert obs.leverage == "10"  # from the seed: ACCOUNT_UPDATE has none
    assert obs.liquidation_price is None and obs.mark_price is None  # unknown, never invented
    assert obs.ts_exchange_ms == 1732100010498  # T


def test_hedge_zero_both_row_never_touches_the_sides(private, frame):
    """The ccxt.pro per-side cache bug: a BOTH row with pa 0 next to LONG/SHORT rows."""
    cache = AccountPositionCache()
    cache.seed([seed_row("SOLUSDT", 1, "long", "40", entry_price="238.1050", unrealized_pnl="12.20000000",
                         liquidation_price="200.1")])
    changed, malformed = cache.apply(account_update(private, frame("ws_binance_account_update_hedge.json")))
    assert malformed == 0
    assert [(o.position_idx, o.side, o.size) for o in changed] == [(0, None, "0"), (2, "short", "15")]
    long = cache.get("SOLUSDT", 1)
    assert (long.side, long.size, long.liquidation_price) == ("long", "40", "200.1")  # unchanged, kept
    assert [(o.position_idx, o.side, o.size) for o in cache.positions()] == [(1, "long", "40"), (2, "short", "15")]


def test_signed_amount_decides_both_and_ps_decides_hedge():
    cache = AccountPositionCache()
    changed, _ = cache.apply(BinanceAccountUpdateMsg(e="ACCOUNT_UPDATE", E=SEED_TS, T=SEED_TS, a=_a([
        row("A", "3"), row("B", "-3"), row("C", "3", "LONG"), row("D", "-3", "SHORT")])))
    assert [(o.symbol, o.position_idx, o.side, o.size) for o in changed] == [
        ("A", 0, "long", "3"), ("B", 0, "short", "3"), ("C", 1, "long", "3"), ("D", 2, "short", "3")]


def _a(rows: list[dict]):
    from agent.exchanges.binance.schemas import BinanceAccountUpdateData
    return BinanceAccountUpdateData(m="ORDER", P=[_raw(r) for r in rows])


def _raw(value: dict):
    import msgspec
    return msgspec.Raw(json.dumps(value).encode())


def test_funding_fee_without_positions_changes_nothing(private, frame):
    cache = AccountPositionCache()
    cache.seed([seed_row("ETHUSDT", 0, "long", "1")])
    assert cache.apply(account_update(private, frame("ws_binance_account_update_funding_fee.json"))) == ([], 0)
    assert cache.get("ETHUSDT", 0) == seed_row("ETHUSDT", 0, "long", "1")


def test_old_and_duplicate_events_are_ignored(private):
    cache = AccountPositionCache()
    first = update([row("ETHUSDT", "1")], E=SEED_TS + 20, T=SEED_TS + 19)
    assert len(cache.apply(account_update(private, first))[0]) == 1
    assert cache.apply(account_update(private, first)) == ([], 0)  # same event from the other connection
    older = update([row("ETHUSDT", "5")], E=SEED_TS + 10, T=SEED_TS + 9)
    assert cache.apply(account_update(private, older)) == ([], 0)  # arrived late
    assert cache.get("ETHUSDT", 0).size == "1" and cache.duplicates == 2
    # E given as a string orders like an int
    newer = update([row("ETHUSDT", "2")], E=str(SEED_TS + 30))
    assert cache.apply(account_update(private, newer))[0][0].size == "2"


def test_events_older_than_the_seed_are_ignored(private):
    cache = AccountPositionCache()
    cache.seed([seed_row("ETHUSDT", 0, "long", "1")])
    stale = update([row("ETHUSDT", "0")], E=SEED_TS, T=SEED_TS)  # the REST row already reflects it
    assert cache.apply(account_update(private, stale)) == ([], 0)
    fresh = update([row("ETHUSDT", "0")], E=SEED_TS + 2, T=SEED_TS + 1)
    [closed], _ = cache.apply(account_update(private, fresh))
    assert not closed.is_open and closed.side is None and cache.positions() == []


def test_seed_does_not_undo_newer_events(private):
    cache = AccountPositionCache()
    cache.seed([seed_row("ETHUSDT", 0, "long", "1")])
    cache.apply(account_update(private, update([row("ETHUSDT", "3")], E=SEED_TS + 50, T=SEED_TS + 50)))
    # a REST snapshot taken before that event arrives late
    cache.seed([seed_row("ETHUSDT", 0, "long", "1", leverage="20")], as_of_ms=SEED_TS + 10)
    assert cache.get("ETHUSDT", 0).size == "3"
    # a snapshot taken after it wins, and a position it does not list is flat
    cache.seed([], as_of_ms=SEED_TS + 100)
    assert cache.positions() == []
    # leverage learnt from a seed is kept for later events
    [obs], _ = cache.apply(account_update(private, update([row("ETHUSDT", "2")], E=SEED_TS + 200)))
    assert obs.leverage == "20"


def test_liquidation_price_is_kept_only_without_a_change_of_size_entry_or_margin(private):
    cache = AccountPositionCache()
    cache.seed([seed_row("ETHUSDT", 0, "long", "1", entry_price="100.0")])
    same = update([row("ETHUSDT", "1", ep="100.0", up="3")], E=SEED_TS + 5)
    [obs], _ = cache.apply(account_update(private, same))
    assert obs.liquidation_price == "2900.5" and obs.unrealized_pnl == "3"
    funding = update([row("ETHUSDT", "1", ep="100.0", up="3")], E=SEED_TS + 6, m="FUNDING_FEE")
    [obs], _ = cache.apply(account_update(private, funding))
    assert obs.liquidation_price is None  # isolated margin moved: unknown until the next REST snapshot


def test_unknown_keys_are_reported_even_when_flat(private):
    [obs], _ = AccountPositionCache().apply(account_update(private, update([row("XRPUSDT", "0")], E=SEED_TS)))
    assert obs.size == "0" and not obs.is_open  # harmless to the book, and safe if it held one


def test_malformed_rows_are_counted(private):
    text = update([row("ETHUSDT", "1"), row("ETHUSDT", "x"), row("ETHUSDT", "1", "BOTTOM"), {"pa": "1"},
                   row("", "1")], E=SEED_TS)
    changed, malformed = AccountPositionCache().apply(account_update(private, text))
    assert len(changed) == 1 and malformed == 4


def test_leverage_from_account_config_update(private, frame):
    cache = AccountPositionCache()
    cache.seed([seed_row("ETHUSDT", 0, "long", "1"), seed_row("SOLUSDT", 0, "long", "5")])
    result = private.classify(frame("ws_binance_account_config_update.json"))
    changed, malformed = cache.read(result.topic, result.payload)
    assert malformed == 0 and [(o.symbol, o.leverage) for o in changed] == [("ETHUSDT", "8")]
    assert cache.read(result.topic, result.payload) == ([], 0)  # duplicate
    [obs], _ = cache.apply(account_update(private, update([row("ETHUSDT", "2")], E=1732100012800)))
    assert obs.leverage == "8"


def test_read_routes_payloads(private, frame):
    cache = AccountPositionCache()
    order = private.classify(frame("ws_binance_order_trade_update.json"))
    assert cache.read(order.topic, order.payload) == ([], 0)


def test_seed_from_the_rest_parser(fixture_bytes, private):
    rows = parse_position_risk(fixture_bytes("binance_position_risk_v3_hedge.json")).positions
    cache = AccountPositionCache()
    cache.seed(rows)
    assert {(o.symbol, o.position_idx) for o in cache.positions()} == {r.key for r in rows if r.is_open}


# -- reference payloads and captures -------------------------------------------------------------------


def _text(reference_payload, name: str) -> str:
    return json.dumps(reference_payload(name))


@pytest.mark.parametrize(("name", "topic", "mark", "funding"), [
    ("binance_ws_combined_markprice.json", "btcusdt@markPrice@1s", "11857.56000000", "0.00015640"),
    ("binance_ws_combined_markprice_2019.json", "btcusdt@markPrice", "8291.34697815", "0.00010000"),
    ("binance_ws_combined_markprice_delivery_symbol.json", "btcbusd_210129@markPrice@1s", "31799.27730000", None),
    ("binance_ws_markprice.json", "btcusdt@markPrice@1s", "11794.15000000", "0.00038167"),
    ("binance_ws_markprice_with_st_nautilus.json", "btcusdt@markPrice@1s", "11794.15000000", "0.00038167"),
    ("binance_ws_markprice_arr.json", "!markPrice@arr@1s", "11185.87786614", "0.00030000"),
])
def test_reference_mark_prices(reference_payload, market, name, topic, mark, funding):
    result = market.classify(_text(reference_payload, name))
    assert result.topic == topic
    [obs], malformed = MarkPriceCache().read(result.topic, result.payload)
    assert malformed == 0 and obs.mark_price == mark and obs.funding_rate == funding


def test_reference_mark_price_2019_has_no_index(reference_payload, market):
    result = market.classify(_text(reference_payload, "binance_ws_combined_markprice_2019.json"))
    assert parse_mark_price(result.payload[0]).index_price is None


def test_reference_requests_and_answers(reference_payload, market):
    sub = reference_payload("binance_ws_subscribe_request.json")
    [ours] = market.subscribe_requests(sub["params"])
    assert set(json.loads(ours.text)) == set(sub)
    assert market.classify(_text(reference_payload, "binance_ws_subscribe_response.json")) == SubscribeAck("1", True)
    assert market.classify(_text(reference_payload, "binance_ws_unsubscribe_response.json")) == \
        SubscribeAck("312", True)
    assert market.classify(_text(reference_payload, "binance_ws_list_subscriptions_response.json")).ok


def test_reference_account_update_hedge(reference_payload, private):
    """The doc example: BOTH pa 0, LONG pa 20, SHORT pa -10; each side stands on its own."""
    cache = AccountPositionCache()
    event = account_update(private, _text(reference_payload, "binance_ws_account_update.json"))
    changed, malformed = cache.apply(event)
    assert malformed == 0
    assert [(o.position_idx, o.side, o.size) for o in changed] == [(0, None, "0"), (1, "long", "20"),
                                                                   (2, "short", "10")]
    assert [(o.position_idx, o.size, o.entry_price) for o in cache.positions()] == [(1, "20", "6563.66500"),
                                                                                  (2, "10", "6563.86000")]


def test_reference_account_update_without_positions(reference_payload, private):
    event = account_update(private, _text(reference_payload, "binance_ws_account_update_bnfcr_nautilus.json"))
    assert AccountPositionCache().apply(event) == ([], 0)


def test_reference_listen_key_expired(reference_payload, private, keys):
    notice = private.classify(_text(reference_payload, "binance_ws_listenkey_expired.json"))
    assert isinstance(notice, ServerNotice) and notice.action == "reconnect"
    assert keys.expired == [reference_payload("binance_ws_listenkey_expired.json")["listenKey"]]


def test_reference_order_trade_update(reference_payload, private):
    result = private.classify(_text(reference_payload, "binance_ws_order_trade_update.json"))
    assert isinstance(result, Data) and result.topic == "ORDER_TRADE_UPDATE"
    assert AccountPositionCache().read(result.topic, result.payload) == ([], 0)


def test_reference_seed_and_merge(reference_payload, private):
    rows = parse_position_risk(_text(reference_payload, "binance_rest_position_risk_v3_hedge.json").encode())
    cache = AccountPositionCache()
    cache.seed(rows.positions)
    assert len(cache.positions()) == sum(1 for r in rows.positions if r.is_open)


def _capture_lines(name: str) -> list[str]:
    if not CAPTURES.is_dir():
        pytest.skip("../shared/reference/payloads/captures is not present")
    return (CAPTURES / name).read_text().splitlines()


def test_capture_tardis_futures_frames(market):
    cache = MarkPriceCache()
    marks, other, unknown = [], 0, 0
    for line in _capture_lines("tardis_binance_futures_frames.jsonl"):
        if json.loads(line).get("generated"):
            continue  # synthetic frames of the recorder, not wire frames
        result = market.classify(line)
        if not isinstance(result, Data):
            unknown += 1
            continue
        found, malformed = cache.read(result.topic, result.payload)
        assert malformed == 0
        marks += found
        other += not found
    assert unknown == 0 and other == 10
    assert [(m.symbol, m.funding_rate is None) for m in marks] == [
        ("BTCUSDT", False), ("BTCUSDT", False), ("BTCBUSD_210129", True)]


def test_capture_cryptofeed_session_on_the_legacy_url(market):
    """A 2021 session of public streams: every frame routes; none is a mark price."""
    cache = MarkPriceCache()
    topics: set[str] = set()
    count = 0
    for line in _capture_lines("cryptofeed_BINANCE_FUTURES.ws.1.0.txt")[1:]:
        _, _, payload = line.partition(": ")
        result = market.classify(payload)
        assert isinstance(result, Data)
        assert cache.read(result.topic, result.payload) == ([], 0)
        topics.add(result.topic.partition("@")[2])
        count += 1
    assert count > 1500 and topics == {"aggTrade", "depth@100ms", "kline_1m", "bookTicker"}


# -- end to end: ResilientWebSocket + these protocols against the simulator -----------------------------------


async def _until(predicate, timeout_seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_end_to_end_against_the_simulator():
    from agent.config.models import ExchangeConfig
    from agent.exchanges import create_rest_api, create_ws_protocols
    from agent.exchanges.base import ApiCredentials, ResolvedEndpoints
    from agent.simulator import Simulator, SimulatorConfig
    from agent.telemetry.metrics import Metrics
    from agent.transport.ws import ResilientWebSocket
    from agent.transport.ws_config import WsConfig

    sim = Simulator(SimulatorConfig(seed=5, price_tick_interval_seconds=0.02, position_change_interval_seconds=0,
                                    binance_ws_mark_price_fast_interval_seconds=0.05))
    ep = (await sim.start()).binance
    metrics = Metrics(CollectorRegistry())
    endpoints = ResolvedEndpoints(ep.rest_url, ep.ws_market_url, ep.ws_private_url)
    config = ExchangeConfig(venue="binance")
    creds = ApiCredentials(ep.api_key, ep.api_secret)
    rest = create_rest_api("binance-e2e", config, endpoints, creds, metrics)
    await rest.start()
    ws = create_ws_protocols("binance-e2e", config, endpoints, creds, rest, metrics=metrics)
    marks_reader, positions_reader = ws.new_mark_price_reader(), ws.new_position_reader()
    marks, rows = [], []
    wsc = WsConfig(ping_interval_seconds=0.5, pong_timeout_seconds=1.0, watchdog_interval_seconds=0.05)
    market = ResilientWebSocket(ws.public, exchange="binance-e2e", stream=ws.public_stream, config=wsc,
                                metrics=metrics,
                                on_data=lambda t, p, rx: marks.extend(marks_reader.read(t, p, rx)[0]))
    private = ResilientWebSocket(ws.private, exchange="binance-e2e", stream=ws.private_stream, config=wsc,
                                 metrics=metrics, on_notice=lambda n: None,
                                 on_data=lambda t, p, rx: rows.extend(positions_reader.read(t, p, rx)[0]))
    assert ws.listen_keys is not None
    ws.listen_keys.set_rotation_callback(lambda reason: private.request_rotation())
    try:
        positions_reader.seed(await rest.fetch_positions())
        await market.start()
        await private.start()
        await market.subscribe([ws.mark_price_topic("BTCUSDT"), ws.mark_price_topic("ETHUSDT")])
        await private.subscribe(ws.position_topics())
        await _until(lambda: market.healthy and private.healthy)
        await _until(lambda: {m.symbol for m in marks} == {"BTCUSDT", "ETHUSDT"} and len(marks) > 6)
        assert len({(m.symbol, m.ts_exchange_ms) for m in marks}) == len(marks)  # no duplicates

        sim.market.open_position("binance", "ETHUSDT", "long", "3")
        await _until(lambda: any(r.is_open for r in rows))
        sim.market.close_position("binance", "ETHUSDT")
        await _until(lambda: rows and not rows[-1].is_open)
        assert [(r.symbol, r.position_idx, r.side, Decimal(r.size)) for r in rows] == \
            [("ETHUSDT", 0, "long", 3), ("ETHUSDT", 0, None, 0)]

        # listenKeyExpired (E as a string): the stream reconnects with a fresh key and keeps delivering
        first_key = ws.listen_keys.key
        generation = private.generation
        sim.faults.inject("binance", "listen_key_expire", e_as_string=True)
        await _until(lambda: private.generation > generation and private.healthy)
        assert ws.listen_keys.key not in (None, first_key)
        sim.market.open_position("binance", "ETHUSDT", "short", "1")
        await _until(lambda: rows[-1].is_open and rows[-1].side == "short")
        assert metrics.registry.get_sample_value(
            "feedagent_ws_listen_key_age_seconds", {"exchange": "binance-e2e"}) is not None
    finally:
        await market.stop()
        await private.stop()
        await ws.close()
        await rest.close()
        await sim.stop()
    assert ws.listen_keys.task_names() == []


async def test_rotation_overlap_delivers_nothing_twice():
    """Make-before-break on the market stream: the E guard lets each event through once."""
    from agent.simulator import Simulator, SimulatorConfig
    from agent.transport.ws import ResilientWebSocket
    from agent.transport.ws_config import WsConfig

    sim = Simulator(SimulatorConfig(seed=6, price_tick_interval_seconds=0.01, position_change_interval_seconds=0,
                                    binance_ws_mark_price_fast_interval_seconds=0.02))
    ep = (await sim.start()).binance
    cache, marks = MarkPriceCache(), []
    config = WsConfig(ping_interval_seconds=0.5, watchdog_interval_seconds=0.02, rotate_after_seconds=0.3)
    market = ResilientWebSocket(BinanceMarketProtocol(ep.ws_market_url), exchange="binance-rot", stream="market",
                                config=config, on_data=lambda t, p, rx: marks.extend(cache.read(t, p, rx)[0]))
    try:
        await market.start()
        await market.subscribe([mark_price_topic("BTCUSDT")])
        await _until(lambda: market.rotations >= 3)
    finally:
        await market.stop()
        await sim.stop()
    times = [m.ts_exchange_ms for m in marks]
    assert len(times) > 10 and times == sorted(times) and len(set(times)) == len(times)
    assert cache.duplicates > 0
