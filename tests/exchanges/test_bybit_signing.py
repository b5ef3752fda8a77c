"""Bybit signing against the docs' worked example and the official SDK (pybit) and ccxt, byte for byte."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

import ccxt
import pytest
from pybit import _helpers, _http_manager
from pybit.unified_trading import HTTP

from agent.exchanges.bybit import signing

DOC_TIMESTAMP_MS = 1658384314791
DOC_API_KEY = "XXXXXXXXXX"
DOC_RECV_WINDOW_MS = 5000
DOC_QUERY = "category=option&symbol=BTC-29JUL22-25000-C"
DOC_SIGNED_STRING = "1658384314791XXXXXXXXXX5000category=option&symbol=BTC-29JUL22-25000-C"

API_KEY = "fixtureKey12345"
API_SECRET = "fixtureSecretAbCdEf0123456789"


def test_prehash_is_the_docs_string_byte_for_byte():
    assert signing.encode_query({"symbol": "BTC-29JUL22-25000-C", "category": "option"}) == DOC_QUERY
    assert signing.prehash(DOC_TIMESTAMP_MS, DOC_API_KEY, DOC_RECV_WINDOW_MS, DOC_QUERY) == DOC_SIGNED_STRING


def test_signature_is_hmac_sha256_hex_of_the_docs_string():
    # The docs do not publish the secret behind their example signature, so the
    # check is: our header equals an independent HMAC over the documented string.
    secret = "any-secret"
    headers = signing.auth_headers(DOC_API_KEY, secret, timestamp_ms=DOC_TIMESTAMP_MS,
                                   recv_window_ms=DOC_RECV_WINDOW_MS, payload=DOC_QUERY)
    expected = hmac.new(secret.encode(), DOC_SIGNED_STRING.encode(), hashlib.sha256).hexdigest()
    assert headers["X-BAPI-SIGN"] == expected
    assert headers["X-BAPI-SIGN"] == headers["X-BAPI-SIGN"].lower() and len(expected) == 64
    assert headers["X-BAPI-API-KEY"] == DOC_API_KEY
    assert headers["X-BAPI-TIMESTAMP"] == "1658384314791"
    assert headers["X-BAPI-RECV-WINDOW"] == "5000"


def test_signature_equals_pybit_module_signer():
    assert signing.hmac_hex(API_SECRET, DOC_SIGNED_STRING) == _http_manager.generate_signature(
        False, API_SECRET, DOC_SIGNED_STRING)


@pytest.mark.parametrize("params", [
    {"category": "linear", "settleCoin": "USDT", "limit": 200},
    {"category": "linear", "settleCoin": "USDT", "limit": 200, "cursor": "page%3D2%2C7"},
    {"category": "linear", "symbol": "BTCUSDT"},
])
def test_query_and_headers_equal_pybit(monkeypatch, params):
    monkeypatch.setattr(_helpers, "generate_timestamp", lambda: DOC_TIMESTAMP_MS)
    session = HTTP(api_key=API_KEY, api_secret=API_SECRET, recv_window=DOC_RECV_WINDOW_MS)

    ours_query = signing.encode_query(params)
    theirs_query = session.prepare_payload("GET", dict(params))
    ours = signing.auth_headers(API_KEY, API_SECRET, timestamp_ms=DOC_TIMESTAMP_MS,
                                recv_window_ms=DOC_RECV_WINDOW_MS, payload=ours_query)
    theirs = session._prepare_headers(theirs_query, DOC_RECV_WINDOW_MS)

    assert ours_query == theirs_query
    assert ours["X-BAPI-SIGN"] == theirs["X-BAPI-SIGN"]
    assert {k: v for k, v in ours.items()} == {k: v for k, v in theirs.items() if k != "Content-Type"}


def test_query_and_signature_equal_ccxt():
    exchange = ccxt.bybit({"apiKey": API_KEY, "secret": API_SECRET})
    exchange.options["recvWindow"] = DOC_RECV_WINDOW_MS
    exchange.nonce = lambda: DOC_TIMESTAMP_MS
    # ccxt keeps the caller's order; pass ours (sorted) so both send the same string.
    params = {"category": "linear", "limit": 200, "settleCoin": "USDT"}

    signed = exchange.sign("v5/position/list", ["private"], "GET", dict(params))
    ours_query = signing.encode_query(params)
    ours = signing.auth_headers(API_KEY, API_SECRET, timestamp_ms=DOC_TIMESTAMP_MS,
                                recv_window_ms=DOC_RECV_WINDOW_MS, payload=ours_query)

    assert urlsplit(signed["url"]).query == ours_query
    for header in ("X-BAPI-API-KEY", "X-BAPI-TIMESTAMP", "X-BAPI-RECV-WINDOW", "X-BAPI-SIGN"):
        assert ours[header] == signed["headers"][header]


def test_ws_auth_signature_signs_get_realtime_plus_expires():
    expected = hmac.new(API_SECRET.encode(), b"GET/realtime1662350400000", hashlib.sha256).hexdigest()
    assert signing.ws_auth_signature(API_SECRET, 1662350400000) == expected


def test_cursor_is_sent_verbatim_and_unsafe_characters_are_encoded():
    assert signing.encode_query({"cursor": "updateAt%3D1672279322668"}) == "cursor=updateAt%3D1672279322668"
    assert signing.encode_query({"cursor": "a b&c"}) == "cursor=a%20b%26c"
    assert signing.encode_query({"cursor": "", "category": "linear"}) == "category=linear"
