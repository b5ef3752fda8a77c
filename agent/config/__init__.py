"""Configuration: schema (``models``), loading with located errors (``loader``),
environment overrides (``env``), secrets (``secrets``) and ``print-config`` (``render``).

The CLI needs only::

    from agent.config import ConfigError, load_config, render_redacted
"""

from agent.config.issues import ConfigError, ConfigIssue
from agent.config.loader import LoadedConfig, load_config
from agent.config.models import ExchangeConfig, FeedAgentConfig
from agent.config.render import config_summary_hash, render_redacted

EX_CONFIG = 78
"""Exit status of ``feedagent validate`` (and ``run``) on an invalid configuration (sysexits.h)."""

__all__ = [
    "EX_CONFIG",
    "ConfigError",
    "ConfigIssue",
    "ExchangeConfig",
    "FeedAgentConfig",
    "LoadedConfig",
    "config_summary_hash",
    "load_config",
    "render_redacted",
]
