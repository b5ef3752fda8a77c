"""Instruments the simulator lists: symbol specs and the default sets per venue."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

Venue = Literal["bybit", "binance"]
VENUES: tuple[Venue, ...] = ("bybit", "binance")


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One USDT-margined perpetual: its filters and where its price starts.

    Prices and quantities are decimal strings, as the venues publish them.
    """

    symbol: str
    base: str
    tick_size: str
    qty_step: str
    start_price: str
    funding_rate: str = "0.0001"
    max_leverage: int = 100
    default_leverage: int = 10
    quote: str = "USDT"

    @property
    def tick(self) -> Decimal:
        """The tick size as a Decimal."""
        return Decimal(self.tick_size)

    @property
    def step(self) -> Decimal:
        """The quantity step (also the minimum order quantity here)."""
        return Decimal(self.qty_step)

    @property
    def price_decimals(self) -> int:
        """Decimal places of a price (Bybit ``priceScale``, Binance ``pricePrecision``)."""
        return decimals(self.tick_size)

    @property
    def qty_decimals(self) -> int:
        """Decimal places of a quantity (Binance ``quantityPrecision``)."""
        return decimals(self.qty_step)


def decimals(step: str) -> int:
    """Number of decimal places of a step such as ``"0.010"`` (3)."""
    exponent = Decimal(step).as_tuple().exponent
    return max(0, -int(exponent))


def round_to_step(value: Decimal, step: Decimal) -> Decimal:
    """``value`` rounded to a multiple of ``step``, keeping the step's decimal places."""
    units = (value / step).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return (units * step).quantize(step)


def fmt(value: Decimal) -> str:
    """A Decimal as a plain string, never in exponent form and never ``-0``."""
    if value == 0:
        value = abs(value)
    text = format(value, "f")
    return text


DEFAULT_BYBIT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTCUSDT", "BTC", tick_size="0.10", qty_step="0.001", start_price="67250.00"),
    SymbolSpec("ETHUSDT", "ETH", tick_size="0.01", qty_step="0.01", start_price="3480.50"),
    SymbolSpec("SOLUSDT", "SOL", tick_size="0.010", qty_step="0.1", start_price="152.340",
               funding_rate="0.00005", max_leverage=75),
    SymbolSpec("XRPUSDT", "XRP", tick_size="0.0001", qty_step="1", start_price="0.5230",
               funding_rate="0.0000875", max_leverage=75),
)

DEFAULT_BINANCE_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec("BTCUSDT", "BTC", tick_size="0.10", qty_step="0.001", start_price="67248.30",
               max_leverage=125),
    SymbolSpec("ETHUSDT", "ETH", tick_size="0.01", qty_step="0.001", start_price="3480.27",
               max_leverage=125),
    SymbolSpec("BNBUSDT", "BNB", tick_size="0.010", qty_step="0.01", start_price="585.120",
               funding_rate="0.00006370", max_leverage=75),
    SymbolSpec("SOLUSDT", "SOL", tick_size="0.0100", qty_step="1", start_price="152.3100",
               funding_rate="0.00004862", max_leverage=75),
)


def synthetic_symbols(count: int, *, start_price: str = "1.0000") -> tuple[SymbolSpec, ...]:
    """``count`` extra symbols (``SIM000USDT``...), for tests that need many positions."""
    return tuple(
        SymbolSpec(f"SIM{i:03d}USDT", f"SIM{i:03d}", tick_size="0.0001", qty_step="1",
                   start_price=start_price, max_leverage=50)
        for i in range(count)
    )
