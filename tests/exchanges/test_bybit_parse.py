"""Bybit REST parsers on the project's fixtures and on the reference payloads."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.observations import MarkPriceObs, PositionObs
from agent.exchanges.bybit.parse import (
    decode_envelope, parse_position_list, parse_server_time_ms, parse_tickers,
)


def _envelope(payload) -> object:
    return decode_envelope(json.dumps(payload).encode())


def test_position_list_one_way(fixture_bytes):
    page = parse_position_list(decode_envelope(fixture_bytes("bybit_position_list_oneway.json")))

    assert page.next_cursor == ""
    assert page.malformed == 1  # XRPUSDT's size is not a number
    assert page.positions == [
        PositionObs(symbol="BTCUSDT", position_idx=0, side="long", size="0.250", entry_price="61234.5",
                    mark_price="61300.10", unrealized_pnl="16.4", leverage="5", liquidation_price="49870.2",
                    ts_exchange_ms=1732100000123),
        PositionObs(symbol="ETHUSDT", position_idx=0, side="short", size="3.5", entry_price="3120.00",
                    mark_price="3101.55", unrealized_pnl="64.575", leverage=None, liquidation_price=None,
                    ts_exchange_ms=1732100000456),
        PositionObs(symbol="SOLUSDT", position_idx=0, side=None, size="0", entry_price="0",
                    mark_price="171.204", unrealized_pnl="0", leverage="10", liquidation_price=None,
                    ts_exchange_ms=1732100000789),
    ]
    assert not page.positions[2].is_open


def test_position_list_hedge_keys_both_sides_and_skips_a_bad_index(fixture_bytes):
    page = parse_position_list(decode_envelope(fixture_bytes("bybit_position_list_hedge.json")))

    assert [(p.key, p.side, p.size) for p in page.positions] == [
        (("ETHUSDT", 1), "long", "1.20"),
        (("ETHUSDT", 2), "short", "0.40"),
    ]
    assert page.malformed == 1


def test_tickers_linear_with_dated_future_and_blank_mark_price(fixture_bytes):
    result = parse_tickers(decode_envelope(fixture_bytes("bybit_tickers_linear.json")))

    assert result.prices == [
        MarkPriceObs(symbol="BTCUSDT", mark_price="61300.10", index_price="61295.44", funding_rate="0.000085",
                     ts_exchange_ms=1732100002000),
        MarkPriceObs(symbol="BTC-27DEC24", mark_price="62541.77", index_price="61295.44", funding_rate=None,
                     ts_exchange_ms=1732100002000),
        MarkPriceObs(symbol="ETHUSDT", mark_price="3101.55", index_price="3100.90", funding_rate="-0.00002",
                     ts_exchange_ms=1732100002000),
    ]
    assert result.malformed == 1  # DOGEUSDT has markPrice ""


def test_tickers_filtered_to_wanted_symbols(fixture_bytes):
    result = parse_tickers(decode_envelope(fixture_bytes("bybit_tickers_linear.json")), ["ETHUSDT", "XYZUSDT"])

    assert [p.symbol for p in result.prices] == ["ETHUSDT"]
    assert result.malformed == 0


def test_server_time_prefers_nanoseconds(fixture_bytes):
    assert parse_server_time_ms(decode_envelope(fixture_bytes("bybit_server_time.json"))) == 1732100003456


def test_server_time_falls_back_to_envelope_time():
    assert parse_server_time_ms(_envelope({"retCode": 0, "result": {}, "time": 1732100000001})) == 1732100000001


def test_success_is_ret_code_zero_whatever_the_message():
    for message in ("OK", "success", "SUCCESS", ""):
        assert _envelope({"retCode": 0, "retMsg": message, "result": {}}).ret_code == 0


def test_body_that_is_not_an_envelope_raises():
    with pytest.raises(msgspec.DecodeError):
        decode_envelope(b'{"retCode":0,"result":{"list":[')
    with pytest.raises(msgspec.ValidationError):
        decode_envelope(b'{"code":-1,"msg":"nope"}')


# -- reference payloads (skipped when ../shared is absent) ---------------------------------------

def test_reference_position_list_inverse(reference_payload):
    page = parse_position_list(_envelope(reference_payload("bybit_rest_position_list.json")))

    assert page.malformed == 0
    [position] = page.positions
    assert (position.symbol, position.side, position.size) == ("BTCUSD", "short", "300")
    assert position.entry_price == "27464.50441675"  # REST avgPrice
    assert position.liquidation_price is None  # liqPrice ""
    assert position.ts_exchange_ms == 1697673600012


def test_reference_position_list_linear_has_a_cursor(reference_payload):
    page = parse_position_list(_envelope(reference_payload("bybit_rest_position_list_linear_doc2023.json")))

    assert page.next_cursor == "updateAt%3D1672279322668"
    assert [(p.symbol, p.side, p.size, p.entry_price) for p in page.positions] == [("XRPUSDT", "long", "100", "0.3615")]


@pytest.mark.parametrize("name, symbol, mark", [
    ("bybit_rest_tickers_inverse.json", "BTCUSD", "114898.43"),
    ("bybit_rest_tickers_option.json", "BTC-30DEC22-18000-C", "0.00000009"),
])
def test_reference_tickers(reference_payload, name, symbol, mark):
    result = parse_tickers(_envelope(reference_payload(name)))
    assert [(p.symbol, p.mark_price) for p in result.prices] == [(symbol, mark)]


def test_reference_spot_tickers_have_no_mark_price(reference_payload):
    result = parse_tickers(_envelope(reference_payload("bybit_rest_tickers_spot.json")))
    assert result.prices == [] and result.malformed == 1


def test_reference_server_time_and_envelope(reference_payload):
    assert parse_server_time_ms(_envelope(reference_payload("bybit_rest_server_time.json"))) == 1688639403423
    assert _envelope(reference_payload("bybit_rest_envelope_ok.json")).ret_code == 0


# -- robustness ---------------------------------------------------------------------------------

_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                          st.text(max_size=12), st.sampled_from(["", "0", "1.5", "-2", "Buy", "Sell", "NaN"]))
_ROWS = st.lists(st.one_of(
    _JSON_SCALARS,
    st.dictionaries(st.sampled_from(["symbol", "side", "size", "positionIdx", "avgPrice", "liqPrice",
                                     "leverage", "updatedTime", "extra"]), _JSON_SCALARS, max_size=9),
), max_size=8)


@settings(max_examples=200, deadline=None)
@given(_ROWS)
def test_any_rows_are_parsed_or_counted_never_raised(rows):
    page = parse_position_list(_envelope({"retCode": 0, "result": {"list": rows, "nextPageCursor": ""}}))
    assert len(page.positions) + page.malformed == len(rows)
    for position in page.positions:
        assert not position.size.startswith("-")
        assert (position.side is None) == (not position.is_open)
