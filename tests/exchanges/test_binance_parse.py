"""Binance REST parsers on the project's fixtures and on the reference payloads."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.observations import MarkPriceObs, PositionObs
from agent.exchanges.binance.parse import (
    decode_error, parse_listen_key, parse_position_risk, parse_premium_index, parse_server_time_ms,
)


def _bytes(payload) -> bytes:
    return json.dumps(payload).encode()


def test_position_risk_one_way_with_zero_long_row_beside_both(fixture_bytes):
    result = parse_position_risk(fixture_bytes("binance_position_risk_v3_oneway.json"))

    assert result.positions == [
        PositionObs(symbol="BTCUSDT", position_idx=0, side="long", size="0.015", entry_price="61002.3",
                    mark_price="61300.10000000", unrealized_pnl="4.47", leverage=None, liquidation_price="0",
                    ts_exchange_ms=1732100000500),
        PositionObs(symbol="BTCUSDT", position_idx=1, side=None, size="0.000", entry_price="0.0",
                    mark_price="61300.10000000", unrealized_pnl="0.00000000", leverage=None,
                    liquidation_price="0", ts_exchange_ms=None),
        PositionObs(symbol="ETHUSDT", position_idx=0, side="short", size="2.400", entry_price="3150.10",
                    mark_price="3101.55000000", unrealized_pnl="116.52", leverage=None,
                    liquidation_price="4411.93", ts_exchange_ms=1732100000600),
    ]
    assert result.malformed == 1  # LTCUSDT sends positionAmt as a JSON number


def test_position_risk_hedge_position_side_decides(fixture_bytes):
    result = parse_position_risk(fixture_bytes("binance_position_risk_v3_hedge.json"))

    assert [(p.key, p.side, p.size) for p in result.positions] == [
        (("ETHUSDT", 1), "long", "1.200"),
        (("ETHUSDT", 2), "short", "0.400"),
        (("BNBUSDT", 2), None, "0"),
    ]
    assert result.malformed == 1  # positionSide SIDEWAYS


def test_premium_index_object(fixture_bytes):
    result = parse_premium_index(fixture_bytes("binance_premium_index_object.json"))
    assert result.prices == [MarkPriceObs(symbol="BTCUSDT", mark_price="61300.10000000",
                                          index_price="61295.44000000", funding_rate="0.00008500",
                                          ts_exchange_ms=1732100004000)]
    assert result.malformed == 0


def test_premium_index_array_with_delivery_contract_and_bad_row(fixture_bytes):
    result = parse_premium_index(fixture_bytes("binance_premium_index_array.json"))

    assert [(p.symbol, p.mark_price, p.funding_rate) for p in result.prices] == [
        ("BTCUSDT", "61300.10000000", "0.00008500"),
        ("ETHUSDT", "3101.55000000", "-0.00002000"),
        ("BTCUSDT_241227", "62541.77000000", None),
    ]
    assert result.malformed == 1  # DOGEUSDT markPrice "NaN"


def test_premium_index_filtered_to_wanted_symbols(fixture_bytes):
    result = parse_premium_index(fixture_bytes("binance_premium_index_array.json"), ["ETHUSDT", "BTCUSDT"])
    assert [p.symbol for p in result.prices] == ["BTCUSDT", "ETHUSDT"]


def test_server_time_and_listen_key(fixture_bytes):
    assert parse_server_time_ms(fixture_bytes("binance_server_time.json")) == 1732100005678
    assert parse_listen_key(fixture_bytes("binance_listen_key.json")).startswith("fixtureListenKey")


def test_truncated_bodies_raise():
    with pytest.raises(msgspec.DecodeError):
        parse_position_risk(b'[{"symbol":"BTCUSDT","positionAmt":"1"')
    with pytest.raises(msgspec.DecodeError):
        parse_premium_index(b'{"symbol":"BTCUSDT","markPrice":')


def test_error_body():
    assert decode_error(b'{"code":-1021,"msg":"Timestamp outside recvWindow."}').code == -1021
    assert decode_error(b"<html>502</html>") is None


# -- reference payloads (skipped when ../shared is absent) ---------------------------------------

def test_reference_position_risk_v3(reference_payload):
    result = parse_position_risk(_bytes(reference_payload("binance_rest_position_risk_v3.json")))
    assert [(p.key, p.side, p.size, p.entry_price) for p in result.positions] == [
        (("ADAUSDT", 0), "long", "30", "0.385")]


def test_reference_position_risk_v3_hedge(reference_payload):
    result = parse_position_risk(_bytes(reference_payload("binance_rest_position_risk_v3_hedge.json")))
    assert [(p.key, p.side, p.size) for p in result.positions] == [
        (("ADAUSDT", 1), "long", "30"), (("COMPUSDT", 2), "short", "1.000")]
    assert result.positions[1].liquidation_price == "2260.56757210"


@pytest.mark.parametrize("name, expected", [
    ("binance_rest_position_risk_v2.json", [(("BTCUSDT", 1), "long", "0.001", "4"), (("BTCUSDT", 2), None, "0.000", "4")]),
    ("binance_rest_position_risk_v2_oneway.json", [(("BTCUSDT", 0), None, "0.000", "10")]),
])
def test_reference_position_risk_v2_rows_decode_too(reference_payload, name, expected):
    result = parse_position_risk(_bytes(reference_payload(name)))
    assert [(p.key, p.side, p.size, p.leverage) for p in result.positions] == expected


@pytest.mark.parametrize("name", ["binance_rest_premium_index.json", "binance_rest_premium_index_all.json"])
def test_reference_premium_index(reference_payload, name):
    result = parse_premium_index(_bytes(reference_payload(name)))
    assert [(p.symbol, p.mark_price, p.funding_rate, p.ts_exchange_ms) for p in result.prices] == [
        ("BTCUSDT", "11793.63104562", "0.00038246", 1597370495002)]


def test_reference_errors_and_listen_keys(reference_payload):
    assert decode_error(_bytes(reference_payload("binance_rest_error.json"))).code == -1121
    assert decode_error(_bytes(reference_payload("binance_rest_error_4531.json"))).code == -4531
    for name in ("binance_rest_listenkey.json", "binance_rest_listenkey_keepalive.json"):
        assert len(parse_listen_key(_bytes(reference_payload(name)))) == 64


# -- robustness ---------------------------------------------------------------------------------

_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                          st.text(max_size=12), st.sampled_from(["", "0", "-1.5", "2", "BOTH", "LONG", "SHORT", "Infinity"]))
_ROWS = st.lists(st.one_of(
    _JSON_SCALARS,
    st.dictionaries(st.sampled_from(["symbol", "positionAmt", "positionSide", "entryPrice", "markPrice",
                                     "liquidationPrice", "updateTime", "extra"]), _JSON_SCALARS, max_size=8),
), max_size=8)


@settings(max_examples=200, deadline=None)
@given(_ROWS)
def test_any_rows_are_parsed_or_counted_never_raised(rows):
    result = parse_position_risk(_bytes(rows))
    assert len(result.positions) + result.malformed == len(rows)
    for position in result.positions:
        assert not position.size.startswith(("-", "+"))
        assert position.position_idx in (0, 1, 2)
        assert (position.side is None) == (not position.is_open)
