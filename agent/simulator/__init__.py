"""The exchange simulator: Bybit v5 and Binance USDⓈ-M on loopback, with a market and faults.

See ``agent/simulator/README.md`` for the control API and the fault kinds.
"""

from agent.simulator.config import SimulatorConfig
from agent.simulator.faults import FaultError, FaultRegistry
from agent.simulator.instruments import SymbolSpec, synthetic_symbols
from agent.simulator.market import MarketError, MarketModel
from agent.simulator.positions import ChangeRecord, PositionChange, PriceTick
from agent.simulator.server import BinanceEndpoints, BybitEndpoints, Simulator, SimulatorEndpoints
from agent.simulator.standalone import run_standalone

__all__ = [
    "BinanceEndpoints",
    "BybitEndpoints",
    "ChangeRecord",
    "FaultError",
    "FaultRegistry",
    "MarketError",
    "MarketModel",
    "PositionChange",
    "PriceTick",
    "Simulator",
    "SimulatorConfig",
    "SimulatorEndpoints",
    "SymbolSpec",
    "run_standalone",
    "synthetic_symbols",
]
