"""Binance signing against the docs' worked example and ccxt, byte for byte."""

from __future__ import annotations

from urllib.parse import urlsplit

import ccxt

from agent.exchanges.binance import signing

DOC_SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
DOC_TOTAL_PARAMS = ("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
                    "&recvWindow=5000&timestamp=1499827319559")
DOC_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
DOC_PARAMS = [("symbol", "LTCBTC"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"),
              ("quantity", "1"), ("price", "0.1")]

API_KEY = "fixtureKey12345"
API_SECRET = "fixtureSecretAbCdEf0123456789"


def test_signature_of_the_docs_example():
    assert signing.signature(DOC_SECRET, DOC_TOTAL_PARAMS) == DOC_SIGNATURE


def test_signed_query_puts_recv_window_timestamp_then_signature_last():
    query = signing.signed_query(DOC_SECRET, DOC_PARAMS, timestamp_ms=1499827319559, recv_window_ms=5000)
    assert query == f"{DOC_TOTAL_PARAMS}&signature={DOC_SIGNATURE}"


def test_total_params_is_query_then_body_without_separator():
    # The docs' "mixed query string and request body" example.
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
    body = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    assert signing.signature(DOC_SECRET, query + body) == (
        "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77")


def test_signed_query_equals_ccxt():
    exchange = ccxt.binanceusdm({"apiKey": API_KEY, "secret": API_SECRET})
    exchange.options["recvWindow"] = 5000  # ccxt's own default is 10000, the docs' is 5000
    exchange.nonce = lambda: 1732100000123

    signed = exchange.sign("positionRisk", ["fapiPrivateV3"], "GET", {})
    query = urlsplit(signed["url"]).query
    unsigned, _, theirs = query.rpartition("&signature=")

    # ccxt orders timestamp before recvWindow; given the same order, our string and signature match.
    assert signing.encode_params([("timestamp", 1732100000123), ("recvWindow", 5000)]) == unsigned
    assert signing.signature(API_SECRET, unsigned) == theirs
    assert signed["headers"]["X-MBX-APIKEY"] == signing.api_key_headers(API_KEY)["X-MBX-APIKEY"]


def test_listen_key_calls_carry_only_the_key_header_like_ccxt():
    exchange = ccxt.binanceusdm({"apiKey": API_KEY, "secret": API_SECRET})
    for method in ("POST", "PUT", "DELETE"):
        signed = exchange.sign("listenKey", ["fapiPrivate"], method, {})
        assert "signature" not in signed["url"]
        assert signed["headers"]["X-MBX-APIKEY"] == API_KEY
    assert signing.api_key_headers(API_KEY) == {"X-MBX-APIKEY": API_KEY}
