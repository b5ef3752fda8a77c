"""Bybit v5 WebSocket adapter: frame classification, requests, auth, the ticker cache, position frames.

Own fixtures (tests/fixtures/exchanges/ws_bybit_*.json) first; then the reference payloads and the
recorded captures in ../shared/reference/payloads (skipped when absent); then one end-to-end run of
``ResilientWebSocket`` with these protocols against the simulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from agent.exchanges.base import ApiCredentials
from agent.exchanges.bybit.schemas import BybitPositionMsg, BybitTickerMsg, BybitWsEnvelope
from agent.exchanges.bybit.ws import (
    ARGS_BUDGET_CHARS, BybitPrivateProtocol, BybitPublicProtocol, args_chars, classify_frame,
)
from agent.exchanges.bybit.ws_parse import (
    BybitPositionReader, MalformedFrame, TickerCache, mark_price_topic, parse_position_frame, position_topics,
    symbol_of_topic,
)
from agent.transport.ws_spec import AuthAck, Data, Pong, SubscribeAck, Unknown, WsProtocol

CREDS = ApiCredentials("XyZ7gH2kLm9pQr4sTu", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5")
CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "payloads" / "captures"


@pytest.fixture
def frame(fixture_bytes):
    """A fixture's text, as it would arrive on the socket."""
    return lambda name: fixture_bytes(name).decode()


def ticker(frame_text: str) -> BybitTickerMsg:
    result = classify_frame(frame_text)
    assert isinstance(result, Data) and isinstance(result.payload, BybitTickerMsg)
    return result.payload


T0 = 1_732_100_000_000  # a plausible exchange time (times before 2015 make a frame malformed)


def tick(symbol: str, kind: str, ts: int, cs: int = 1, **fields: str) -> BybitTickerMsg:
    data = {"symbol": symbol, **fields}
    return ticker(json.dumps({"topic": f"tickers.{symbol}", "type": kind, "data": data, "cs": cs, "ts": ts}))


# -- classification -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ws_bybit_pong_linear.json", "ws_bybit_pong_spot.json",
                                  "ws_bybit_pong_private.json", "ws_bybit_pong_option.json"])
def test_every_pong_shape_is_a_pong(frame, name):
    assert classify_frame(frame(name)) == Pong()


def test_auth_acks_judge_success_not_ret_code(frame):
    assert classify_frame(frame("ws_bybit_auth_ok.json")) == AuthAck(True, "")
    assert classify_frame(frame("ws_bybit_auth_rejected.json")) == AuthAck(False, "Params Error")


@pytest.mark.parametrize(("name", "expected"), [
    ("ws_bybit_subscribe_ack_linear.json", SubscribeAck("4", True)),
    ("ws_bybit_subscribe_ack_spot.json", SubscribeAck("5", True)),  # ret_msg "subscribe" on success
    ("ws_bybit_subscribe_ack_private.json", SubscribeAck(None, True)),  # no req_id: oldest request
    ("ws_bybit_unsubscribe_ack.json", SubscribeAck("7", True)),
    ("ws_bybit_subscribe_rejected.json",
     SubscribeAck("6", False, "error:handler not found,topic:tickers.NOSUCHUSDT")),
    ("ws_bybit_subscribe_ack_option.json", SubscribeAck(None, True, "", ("tickers.ETH-27DEC24-9999-C",))),
])
def test_subscribe_acks(frame, name, expected):
    assert classify_frame(frame(name)) == expected


def test_empty_req_id_matches_the_oldest_request():
    ack = classify_frame('{"success":true,"ret_msg":"","conn_id":"c","req_id":"","op":"subscribe"}')
    assert ack == SubscribeAck(None, True)


def test_data_frames_are_typed_by_topic(frame):
    snap = classify_frame(frame("ws_bybit_tickers_snapshot.json"))
    assert isinstance(snap, Data) and snap.topic == "tickers.ETHUSDT"
    assert isinstance(snap.payload, BybitTickerMsg) and snap.payload.type == "snapshot"
    assert snap.payload.ts == 1732100001100 and snap.payload.cs == 148213377051
    pos = classify_frame(frame("ws_bybit_position_oneway.json"))
    assert isinstance(pos, Data) and pos.topic == "position" and isinstance(pos.payload, BybitPositionMsg)
    other = classify_frame('{"topic":"publicTrade.ETHUSDT","type":"snapshot","ts":1,"data":[]}')
    assert isinstance(other, Data) and isinstance(other.payload, BybitWsEnvelope)


def test_unrecognised_control_frames_are_unknown(frame):
    assert isinstance(classify_frame(frame("ws_bybit_unknown_op.json")), Unknown)
    # A pre-v5 ack has no ``op``: a v5 client must not take it for its own ack.
    legacy = '{"success":true,"ret_msg":"","conn_id":"c","request":{"op":"subscribe","args":["trade.BTCUSD"]}}'
    assert isinstance(classify_frame(legacy), Unknown)


@pytest.mark.parametrize("text", ["not json", "[1,2]", '{"topic":"tickers.ETHUSDT","type":"delta","data":[1]}',
                                  '{"topic":"position","data":{"a":1}}', '{"op":5}'])
def test_malformed_frames_raise_for_the_connection_to_count(text):
    with pytest.raises(MalformedFrame):
        classify_frame(text)


# -- requests -------------------------------------------------------------------------------------


def test_protocols_satisfy_the_contract():
    assert isinstance(BybitPublicProtocol("ws://x/v5/public/linear"), WsProtocol)
    assert isinstance(BybitPrivateProtocol("ws://x/v5/private", CREDS), WsProtocol)


async def test_urls_are_used_as_configured():
    assert await BybitPublicProtocol("wss://stream.bybit.com/v5/public/linear").url() == \
        "wss://stream.bybit.com/v5/public/linear"
    assert await BybitPrivateProtocol("wss://stream.bybit.com/v5/private", CREDS).url() == \
        "wss://stream.bybit.com/v5/private"


def test_subscribe_request_shape():
    proto = BybitPublicProtocol("ws://x")
    [req] = proto.subscribe_requests(["tickers.BTCUSDT", "tickers.ETHUSDT"])
    assert json.loads(req.text) == {"req_id": req.request_id, "op": "subscribe",
                                    "args": ["tickers.BTCUSDT", "tickers.ETHUSDT"]}
    assert req.topics == ("tickers.BTCUSDT", "tickers.ETHUSDT") and req.expects_ack
    [unsub] = proto.unsubscribe_requests(["tickers.BTCUSDT"])
    assert json.loads(unsub.text)["op"] == "unsubscribe" and unsub.request_id != req.request_id


def test_subscribe_batches_stay_within_the_args_budget():
    topics = [f"tickers.SYM{i:05d}USDT" for i in range(2000)]  # 28,000+ characters of args
    proto = BybitPublicProtocol("ws://x", max_args_per_request=10_000)
    requests = proto.subscribe_requests(topics)
    assert len(requests) >= 2
    assert [t for r in requests for t in r.topics] == topics  # every topic once, in order
    for req in requests:
        args = json.loads(req.text)["args"]
        compact = json.dumps(args, separators=(",", ":"))
        assert args_chars(args) == len(compact) <= ARGS_BUDGET_CHARS
    assert len({r.request_id for r in requests}) == len(requests)


def test_fits_enforces_the_connection_budget():
    proto = BybitPublicProtocol("ws://x")
    n = (ARGS_BUDGET_CHARS - 1) // len('"tickers.SYM00000USDT",')
    fitting = [f"tickers.SYM{i:05d}USDT" for i in range(n)]
    assert proto.fits(fitting)
    assert sum(len(t) for t in fitting) <= len(json.dumps(fitting, separators=(",", ":"))) <= ARGS_BUDGET_CHARS
    assert not proto.fits([*fitting, "tickers.ONEMOREUSDT"])


def test_requests_are_capped_in_topics_so_one_bad_topic_fails_few():
    proto = BybitPublicProtocol("ws://x", max_args_per_request=3)
    requests = proto.subscribe_requests([f"tickers.S{i}USDT" for i in range(7)])
    assert [len(r.topics) for r in requests] == [3, 3, 1]


def test_ping_is_a_json_text_frame():
    proto = BybitPublicProtocol("ws://x")
    first, second = json.loads(proto.ping_request(0)), json.loads(proto.ping_request(0))
    assert first["op"] == "ping" and second["op"] == "ping" and first["req_id"] != second["req_id"]
    assert BybitPrivateProtocol("ws://x", CREDS).ping_request(0) is not None


def test_staleness_public_streaming_private_event_driven():
    assert BybitPublicProtocol("ws://x", stale_after_seconds=4.0).stale_after_seconds("tickers.BTCUSDT") == 4.0
    assert BybitPrivateProtocol("ws://x", CREDS).stale_after_seconds("position") is None
    assert BybitPublicProtocol("ws://x").auth_request(0) is None


def test_topic_helpers():
    assert mark_price_topic("BTCUSDT") == "tickers.BTCUSDT"
    assert symbol_of_topic("tickers.BTCUSDT") == "BTCUSDT"
    assert symbol_of_topic("position") is None and symbol_of_topic("tickers.") is None
    assert position_topics() == ("position",)


# -- auth -----------------------------------------------------------------------------------------


def test_auth_signs_get_realtime_plus_expires_on_the_server_clock():
    server_now = 1_732_100_000_000
    proto = BybitPrivateProtocol("ws://x", CREDS, server_now_ms=lambda: server_now)
    msg = json.loads(proto.auth_request(now_ms=42))  # the local clock is ignored when the server clock is known
    key, expires, signature = msg["args"]
    assert msg["op"] == "auth" and key == CREDS.api_key
    assert isinstance(expires, int) and expires == server_now + 5_000
    expected = hmac.new(CREDS.api_secret.encode(), f"GET/realtime{expires}".encode(), hashlib.sha256).hexdigest()
    assert signature == expected


def test_auth_without_server_clock_uses_the_connection_clock():
    proto = BybitPrivateProtocol("ws://x", CREDS, auth_window_ms=3_000)
    assert json.loads(proto.auth_request(now_ms=1_000))["args"][1] == 4_000


def test_auth_signature_matches_pybit(monkeypatch):
    from pybit import _helpers
    from pybit._websocket_stream import _WebSocketManager

    now = 1_732_100_000_123
    manager = _WebSocketManager(lambda message: None, "test", testnet=False, api_key=CREDS.api_key,
                                api_secret=CREDS.api_secret, private_auth_expire=5)
    sent: list[str] = []
    manager.ws = SimpleNamespace(send=sent.append)
    monkeypatch.setattr(_helpers, "generate_timestamp", lambda: now)
    manager._auth()

    ours = json.loads(BybitPrivateProtocol("ws://x", CREDS, server_now_ms=lambda: now).auth_request(0))
    assert ours["args"] == json.loads(sent[0])["args"]


def test_credentials_never_show_in_repr():
    assert CREDS.api_secret not in repr(BybitPrivateProtocol("ws://x", CREDS))


# -- ticker cache ---------------------------------------------------------------------------------


def test_snapshot_then_deltas(frame):
    cache = TickerCache()
    first = cache.apply(ticker(frame("ws_bybit_tickers_snapshot.json")))
    assert first is not None and (first.symbol, first.mark_price, first.index_price, first.funding_rate) == \
        ("ETHUSDT", "3421.51", "3422.08", "0.000087")
    assert first.ts_exchange_ms == 1732100001100

    moved = cache.apply(ticker(frame("ws_bybit_tickers_delta_mark.json")))
    assert moved is not None and (moved.mark_price, moved.index_price, moved.funding_rate) == \
        ("3421.74", "3422.40", "0.000087")  # funding unchanged: merged from the snapshot

    assert cache.apply(ticker(frame("ws_bybit_tickers_delta_no_mark.json"))) is None
    assert cache.mark_price("ETHUSDT") == "3421.74"  # a delta without markPrice changes nothing

    funding = cache.apply(ticker(frame("ws_bybit_tickers_delta_funding.json")))
    assert funding is not None and (funding.mark_price, funding.index_price, funding.funding_rate) == \
        ("3421.90", "3422.40", "0.000091")


def test_duplicate_and_out_of_order_frames_are_ignored(frame):
    cache = TickerCache()
    snapshot = ticker(frame("ws_bybit_tickers_snapshot.json"))
    delta = ticker(frame("ws_bybit_tickers_delta_mark.json"))
    assert cache.apply(snapshot) is not None
    assert cache.apply(delta) is not None
    assert cache.apply(delta) is None  # the same frame from the other connection of a rotation
    assert cache.apply(snapshot) is None  # an older snapshot cannot move the price back
    assert cache.mark_price("ETHUSDT") == "3421.74" and cache.duplicates == 2
    # same ts, higher cross sequence: newer
    later = tick("ETHUSDT", "delta", ts=delta.ts, cs=delta.cs + 1, markPrice="3421.75")
    assert cache.apply(later).mark_price == "3421.75"


def test_new_snapshot_replaces_and_absent_fields_become_unknown():
    cache = TickerCache()
    cache.apply(tick("ETHUSDT", "snapshot", T0 + 10, markPrice="1", indexPrice="2", fundingRate="0.1"))
    obs = cache.apply(tick("ETHUSDT", "snapshot", T0 + 20, markPrice="3"))
    assert (obs.mark_price, obs.index_price, obs.funding_rate) == ("3", None, None)


def test_delta_before_any_snapshot_gives_only_what_it_carries():
    cache = TickerCache()
    obs = cache.apply(tick("ETHUSDT", "delta", T0 + 10, markPrice="5"))
    assert (obs.mark_price, obs.index_price, obs.funding_rate) == ("5", None, None)  # never invented


def test_reset_drops_symbols_and_their_guards():
    cache = TickerCache()
    cache.apply(tick("ETHUSDT", "snapshot", T0 + 100, markPrice="1", indexPrice="2"))
    cache.apply(tick("SOLUSDT", "snapshot", T0 + 100, markPrice="7"))
    cache.reset(["tickers.ETHUSDT"])
    assert "ETHUSDT" not in cache and "SOLUSDT" in cache
    # after a reconnect a fresh snapshot is applied even if its ts is not newer
    assert cache.apply(tick("ETHUSDT", "snapshot", T0 + 90, markPrice="1.5")).mark_price == "1.5"
    cache.reset()
    assert len(cache) == 0


def test_dated_futures_blank_funding_is_none(frame):
    obs = TickerCache().apply(ticker(frame("ws_bybit_tickers_dated_snapshot.json")))
    assert obs.symbol == "ETH-27DEC24" and obs.mark_price == "3470.12" and obs.funding_rate is None


def test_blank_mark_price_in_a_delta_keeps_the_last_one():
    cache = TickerCache()
    cache.apply(tick("ETHUSDT", "snapshot", T0 + 1, markPrice="10"))
    assert cache.apply(tick("ETHUSDT", "delta", T0 + 2, markPrice="")) is None
    assert cache.mark_price("ETHUSDT") == "10"


def test_malformed_ticker_is_counted_and_changes_nothing():
    cache = TickerCache()
    cache.apply(tick("ETHUSDT", "snapshot", T0 + 1, markPrice="10", indexPrice="11"))
    bad = tick("ETHUSDT", "delta", T0 + 2, markPrice="abc", indexPrice="12")
    assert cache.read(bad.topic, bad) == ([], 1)
    assert cache.mark_price("ETHUSDT") == "10"
    assert cache.apply(tick("ETHUSDT", "delta", T0 + 3, markPrice="10.5")).index_price == "11"


def test_symbol_comes_from_the_topic_when_data_lacks_it():
    msg = ticker('{"topic":"tickers.ETHUSDT","type":"delta","data":{"markPrice":"9"},"cs":1,"ts":%d}' % T0)
    assert TickerCache().apply(msg).symbol == "ETHUSDT"


def test_implausible_future_timestamp_is_not_trusted():
    cache = TickerCache(max_future_ms=60_000)
    received = 1_732_100_000_000
    bogus = tick("ETHUSDT", "snapshot", ts=received + 10**9, markPrice="10")
    obs = cache.apply(bogus, received_ms=received)
    assert obs.mark_price == "10" and obs.ts_exchange_ms is None and cache.implausible == 1
    # the bogus time did not become the guard: normal frames still apply
    assert cache.apply(tick("ETHUSDT", "delta", ts=received, markPrice="11"), received_ms=received) is not None


def test_read_ignores_other_payloads():
    assert TickerCache().read("position", object()) == ([], 0)


# -- position frames ------------------------------------------------------------------------------


def position_frame(text: str) -> BybitPositionMsg:
    result = classify_frame(text)
    assert isinstance(result, Data) and isinstance(result.payload, BybitPositionMsg)
    return result.payload


def test_one_way_position(frame):
    rows, malformed = parse_position_frame(position_frame(frame("ws_bybit_position_oneway.json")))
    assert malformed == 0
    [row] = rows
    assert (row.symbol, row.position_idx, row.side, row.size) == ("ETHUSDT", 0, "short", "2.5")
    assert row.entry_price == "3418.2"  # ``entryPrice`` on the stream, ``avgPrice`` on REST
    assert (row.leverage, row.liquidation_price, row.unrealized_pnl) == ("5", "4080.15", "-8.2775")
    assert row.ts_exchange_ms == 1732100002340  # updatedTime


def test_hedge_positions_and_other_categories(frame):
    rows, malformed = parse_position_frame(position_frame(frame("ws_bybit_position_hedge.json")))
    assert malformed == 0
    assert [(r.symbol, r.position_idx, r.side, r.size) for r in rows] == \
        [("SOLUSDT", 1, "long", "40"), ("SOLUSDT", 2, "short", "15")]  # the inverse row is not ours
    assert rows[0].liquidation_price is None  # "" is unknown
    everything, _ = parse_position_frame(position_frame(frame("ws_bybit_position_hedge.json")), category=None)
    assert len(everything) == 3


def test_closed_position(frame):
    [row], malformed = parse_position_frame(position_frame(frame("ws_bybit_position_closed.json")))
    assert malformed == 0 and row.side is None and row.size == "0" and not row.is_open
    assert row.liquidation_price is None and row.key == ("ETHUSDT", 0)


def test_malformed_rows_are_counted_and_skipped():
    text = json.dumps({"topic": "position", "creationTime": T0 + 7, "data": [
        {"symbol": "ETHUSDT", "size": "1", "side": "Buy", "positionIdx": 0, "entryPrice": "3000"},
        {"symbol": "ETHUSDT", "size": "x", "side": "Buy", "positionIdx": 1},
        {"symbol": "ETHUSDT", "size": "1", "side": "", "positionIdx": 2},
        {"size": "1"}]})
    rows, malformed = parse_position_frame(position_frame(text))
    assert malformed == 3 and [r.position_idx for r in rows] == [0]
    assert rows[0].ts_exchange_ms == T0 + 7  # no updatedTime: the frame's creationTime


def test_position_reader_distrusts_future_times(frame):
    reader = BybitPositionReader()
    payload = position_frame(frame("ws_bybit_position_oneway.json"))
    [row], _ = reader.read("position", payload, received_ms=1732100002400)
    assert row.ts_exchange_ms == 1732100002340
    [row], _ = reader.read("position", payload, received_ms=1_600_000_000_000)
    assert row.ts_exchange_ms is None
    assert reader.read("tickers.X", object()) == ([], 0)


# -- reference payloads and captures (../shared/reference/payloads) --------------------------------


def _text(reference_payload, name: str) -> str:
    return json.dumps(reference_payload(name))


@pytest.mark.parametrize("name", ["bybit_ws_pong_public.json", "bybit_ws_pong_public_spot.json",
                                  "bybit_ws_pong_public_option_spread.json", "bybit_ws_pong_private.json"])
def test_reference_pongs(reference_payload, name):
    assert classify_frame(_text(reference_payload, name)) == Pong()


@pytest.mark.parametrize("name", ["bybit_ws_subscribe_response.json", "bybit_ws_subscribe_response_private.json",
                                  "bybit_ws_subscribe_response_spot.json",
                                  "bybit_ws_subscribe_response_option_spread.json"])
def test_reference_subscribe_acks(reference_payload, name):
    ack = classify_frame(_text(reference_payload, name))
    assert isinstance(ack, SubscribeAck) and ack.ok and ack.failed_topics == ()


def test_reference_auth_response(reference_payload):
    assert classify_frame(_text(reference_payload, "bybit_ws_auth_response.json")) == AuthAck(True, "")


def test_reference_requests_match_ours(reference_payload):
    ping = reference_payload("bybit_ws_ping_request.json")
    assert set(json.loads(BybitPublicProtocol("ws://x").ping_request(0))) == set(ping)
    sub = reference_payload("bybit_ws_subscribe_request.json")
    ours = json.loads(BybitPublicProtocol("ws://x").subscribe_requests(sub["args"])[0].text)
    assert set(ours) == set(sub) and ours["args"] == sub["args"]
    auth = reference_payload("bybit_ws_auth_request.json")
    ours_auth = json.loads(BybitPrivateProtocol("ws://x", CREDS).auth_request(1))
    assert set(ours_auth) == set(auth) and [type(a) for a in ours_auth["args"]] == [type(a) for a in auth["args"]]
    assert position_topics() == tuple(reference_payload("bybit_ws_position_subscribe_request.json")["args"])


@pytest.mark.parametrize(("name", "mark", "funding"), [
    ("bybit_ws_tickers_linear_snapshot.json", "66666.60", "-0.005"),
    ("bybit_ws_tickers_linear_snapshot_doc2023.json", "17217.33", "-0.000212"),
    ("bybit_ws_tickers_linear_snapshot_tardis.json", "28552.81", "0.0001"),
    ("bybit_ws_tickers_linear_futures_snapshot.json", "121144.63", None),
    ("bybit_ws_tickers_inverse_snapshot_tardis.json", "28560.00", "0.0001"),
    ("bybit_ws_tickers_inverse_futures_snapshot_tardis.json", "29023.60", None),
])
def test_reference_ticker_snapshots(reference_payload, name, mark, funding):
    obs = TickerCache().apply(ticker(_text(reference_payload, name)))
    assert obs is not None and obs.mark_price == mark and obs.funding_rate == funding


@pytest.mark.parametrize(("snapshot", "delta"), [
    ("bybit_ws_tickers_inverse_snapshot_tardis.json", "bybit_ws_tickers_inverse_delta_tardis.json"),
    ("bybit_ws_tickers_inverse_futures_snapshot_tardis.json", "bybit_ws_tickers_inverse_futures_delta_tardis.json"),
])
def test_reference_deltas_without_mark_price(reference_payload, snapshot, delta):
    cache = TickerCache()
    first = cache.apply(ticker(_text(reference_payload, snapshot)))
    assert cache.apply(ticker(_text(reference_payload, delta))) is None
    assert cache.mark_price(first.symbol) == first.mark_price


def test_reference_spot_and_option_snapshots_do_not_break(reference_payload):
    for name in ("bybit_ws_tickers_spot_snapshot.json", "bybit_ws_tickers_option_snapshot.json"):
        TickerCache().apply(ticker(_text(reference_payload, name)))  # no exception; spot has no markPrice


@pytest.mark.parametrize(("name", "expected"), [
    ("bybit_ws_position.json", [("BTCUSDT", 2, None, "0")]),
    ("bybit_ws_position_doc2023.json", [("XRPUSDT", 0, "long", "75")]),
])
def test_reference_position_frames(reference_payload, name, expected):
    rows, malformed = parse_position_frame(position_frame(_text(reference_payload, name)))
    assert malformed == 0 and [(r.symbol, r.position_idx, r.side, r.size) for r in rows] == expected
    if name == "bybit_ws_position_doc2023.json":
        assert rows[0].entry_price == "0.3615" and rows[0].liquidation_price is None


@pytest.mark.parametrize("name", ["bybit_ws_orderbook_snapshot.json", "bybit_ws_orderbook_delta.json",
                                  "bybit_ws_publictrade.json", "bybit_ws_orderbook1_delta_tardis.json"])
def test_reference_other_topics_are_data_without_mark_prices(reference_payload, name):
    result = classify_frame(_text(reference_payload, name))
    assert isinstance(result, Data) and TickerCache().read(result.topic, result.payload) == ([], 0)


def _capture_lines(name: str) -> list[str]:
    if not CAPTURES.is_dir():
        pytest.skip("../shared/reference/payloads/captures is not present")
    return (CAPTURES / name).read_text().splitlines()


def test_capture_tardis_v5_frames():
    cache, reader = TickerCache(), BybitPositionReader()
    marks, unknown, data = [], 0, 0
    for line in _capture_lines("tardis_bybit_v5_frames.jsonl"):
        result = classify_frame(line)
        if isinstance(result, Data):
            data += 1
            marks += cache.read(result.topic, result.payload)[0]
            assert reader.read(result.topic, result.payload) == ([], 0)
        else:
            unknown += 1
    assert data == 21 and unknown == 0
    assert {m.symbol for m in marks} == {"BTCUSD", "BTCUSDU23", "BTCUSDT"}
    assert all(m.mark_price for m in marks)


def test_capture_legacy_pre_v5_session_is_not_accepted():
    """The 2021 ``/realtime`` protocol: its acks are unknown to us and nothing in it is a mark price."""
    cache = TickerCache()
    counts = {"data": 0, "unknown": 0, "control": 0}
    for line in _capture_lines("LEGACY_pre_v5_cryptofeed_BYBIT.ws.26.0.txt"):
        if not line[:1].isdigit():
            continue  # the URL line and our own requests (``<-``)
        _, _, payload = line.partition(": ")
        result = classify_frame(payload)
        if isinstance(result, Data):
            counts["data"] += 1
            assert not result.topic.startswith("tickers.")
            assert cache.read(result.topic, result.payload) == ([], 0)
        elif isinstance(result, Unknown):
            counts["unknown"] += 1
        else:
            counts["control"] += 1
    assert counts["control"] == 0 and counts["unknown"] == 4 and counts["data"] > 1000


# -- end to end: ResilientWebSocket + these protocols against the simulator --------------------------


async def _until(predicate, timeout_seconds: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_end_to_end_against_the_simulator():
    from agent.simulator import Simulator, SimulatorConfig
    from agent.telemetry.metrics import Metrics
    from agent.transport.ws import ResilientWebSocket
    from agent.transport.ws_config import WsConfig

    sim = Simulator(SimulatorConfig(seed=11, price_tick_interval_seconds=0.02, position_change_interval_seconds=0,
                                    bybit_ws_ticker_interval_seconds=0.02))
    endpoints = await sim.start()
    ep = endpoints.bybit
    metrics = Metrics(CollectorRegistry())
    config = WsConfig(ping_interval_seconds=0.2, pong_timeout_seconds=1.0, watchdog_interval_seconds=0.05)
    cache, reader = TickerCache(), BybitPositionReader()
    marks, rows = [], []
    public = ResilientWebSocket(
        BybitPublicProtocol(ep.ws_public_url, stale_after_seconds=2.0), exchange="bybit-e2e", stream="public",
        config=config, metrics=metrics, on_data=lambda t, p, rx: marks.extend(cache.read(t, p, rx)[0]))
    private = ResilientWebSocket(
        BybitPrivateProtocol(ep.ws_private_url, ApiCredentials(ep.api_key, ep.api_secret),
                             server_now_ms=sim.market.now_ms),
        exchange="bybit-e2e", stream="private", config=config, metrics=metrics,
        on_data=lambda t, p, rx: rows.extend(reader.read(t, p, rx)[0]))
    try:
        await public.start()
        await private.start()
        await public.subscribe([mark_price_topic("BTCUSDT"), mark_price_topic("ETHUSDT")])
        await private.subscribe(position_topics())
        await _until(lambda: public.healthy and private.healthy)

        await _until(lambda: {m.symbol for m in marks} == {"BTCUSDT", "ETHUSDT"} and len(marks) > 10)
        assert all(m.index_price and m.funding_rate for m in marks)  # merged from the snapshot

        sim.market.open_position("bybit", "ETHUSDT", "short", "2")
        await _until(lambda: any(r.is_open for r in rows))
        sim.market.close_position("bybit", "ETHUSDT")
        await _until(lambda: rows and not rows[-1].is_open)
        assert [(r.symbol, r.position_idx, r.side, Decimal(r.size)) for r in rows] == \
            [("ETHUSDT", 0, "short", 2), ("ETHUSDT", 0, None, 0)]
        assert rows[0].entry_price and rows[0].leverage

        await asyncio.sleep(0.5)  # a few heartbeats: pongs answered on both streams
        assert public.healthy and private.healthy and private.snapshot().last_rtt_seconds is not None
        unknown = {"exchange": "bybit-e2e", "stream": "public", "kind": "unknown"}
        assert metrics.registry.get_sample_value("feedagent_ws_messages_total", unknown) in (None, 0)
    finally:
        await public.stop()
        await private.stop()
        await sim.stop()


async def test_rotation_overlap_delivers_nothing_twice():
    """Make-before-break: both links may deliver for a while; each (ts, cs) goes through once, in order."""
    from agent.simulator import Simulator, SimulatorConfig
    from agent.transport.ws import ResilientWebSocket
    from agent.transport.ws_config import WsConfig

    sim = Simulator(SimulatorConfig(seed=12, price_tick_interval_seconds=0.01, position_change_interval_seconds=0,
                                    bybit_ws_ticker_interval_seconds=0.01))
    ep = (await sim.start()).bybit
    cache, marks, applied = TickerCache(), [], []

    def on_data(topic, payload, received_ms):
        found, _ = cache.read(topic, payload, received_ms)
        if found:
            applied.append((payload.ts, payload.cs))
        marks.extend(found)

    config = WsConfig(ping_interval_seconds=0.2, watchdog_interval_seconds=0.02, rotate_after_seconds=0.3)
    public = ResilientWebSocket(BybitPublicProtocol(ep.ws_public_url), exchange="bybit-rot", stream="public",
                                config=config, on_data=on_data)
    try:
        await public.start()
        await public.subscribe([mark_price_topic("BTCUSDT")])
        await _until(lambda: public.rotations >= 3)
    finally:
        await public.stop()
        await sim.stop()
    # Each new link starts with a snapshot newer than anything before it, so the price never goes back;
    # deltas the old link still sends during the overlap are dropped by the (ts, cs) guard.
    assert len(applied) > 20 and applied == sorted(applied) and len(set(applied)) == len(applied)
    times = [m.ts_exchange_ms for m in marks]
    assert times == sorted(times)
