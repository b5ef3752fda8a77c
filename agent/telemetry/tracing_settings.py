"""Tracing settings: the YAML section with the standard ``OTEL_*`` variables on top (they win)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:

    from agent.config.models import TracingSection

log = logging.getLogger("agent.tracing")

TRACES_PATH = "/v1/traces"


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TracingSettings:
    """The effective tracing settings: the YAML section with the ``OTEL_*`` environment on top.

    ``sources`` says where each setting came from (``config``: the YAML file
    or a ``FEEDAGENT_*`` override; ``default``; or ``env:OTEL_...``);
    ``warnings`` lists environment values that were ignored.
    """

    enabled: bool
    endpoint: str                       # full URL of the traces endpoint
    sample_ratio: float
    service_name: str
    export_interval_seconds: float
    export_timeout_seconds: float
    max_buffered_spans: int
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold credentials: never logged
    resource_attributes: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """What is safe to log: the endpoint without user info or query, header names only."""
        return {"enabled": self.enabled, "endpoint": redact_url(self.endpoint), "sample_ratio": self.sample_ratio,
                "service_name": self.service_name, "header_names": sorted(self.headers),
                "sources": dict(self.sources)}


_SAMPLER_RATIOS = {"always_on": 1.0, "always_off": 0.0, "parentbased_always_on": 1.0,
                   "parentbased_always_off": 0.0}


def resolve_settings(config: TracingSection, environ: Mapping[str, str] | None = None) -> TracingSettings:
    """Apply the standard OpenTelemetry environment variables over the YAML section.

    Precedence, per setting: ``OTEL_*`` variable > config (YAML, with its
    ``FEEDAGENT_*`` overrides) > default. The environment wins, as it does for
    every other key, because that is where platforms put tracing settings for
    all their services (the OpenTelemetry Operator's injection, a chart's
    ``env``), and they expect them to take effect without editing each
    service's config. Tracing is on when
    ``OTEL_TRACES_EXPORTER`` says ``otlp``, or (that variable unset) when the
    YAML says ``exporter: otlp`` or an ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``
    is set; ``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` turn it off.
    """
    env = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    warnings: list[str] = []
    fields_set = config.model_fields_set

    def origin(key: str) -> str:
        return "config" if key in fields_set else "default"

    def get(name: str) -> str:
        return env.get(name, "").strip()

    # endpoint
    if get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):  # the signal's own URL, used as given
        endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        sources["endpoint"] = "env:OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    elif get("OTEL_EXPORTER_OTLP_ENDPOINT"):  # a base URL: /v1/traces is appended
        endpoint = _traces_url(get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        sources["endpoint"] = "env:OTEL_EXPORTER_OTLP_ENDPOINT"
    else:
        endpoint, sources["endpoint"] = _traces_url(config.endpoint), origin("endpoint")
    if not endpoint.startswith(("http://", "https://")):
        warnings.append(f"{sources['endpoint'].removeprefix('env:')}: not an http(s) URL; using the YAML endpoint")
        endpoint, sources["endpoint"] = _traces_url(config.endpoint), origin("endpoint")

    # on or off
    exporters = [e.strip().lower() for e in get("OTEL_TRACES_EXPORTER").split(",") if e.strip()]
    if get("OTEL_SDK_DISABLED").lower() == "true":
        enabled, sources["exporter"] = False, "env:OTEL_SDK_DISABLED"
    elif "none" in exporters:
        enabled, sources["exporter"] = False, "env:OTEL_TRACES_EXPORTER"
    elif "otlp" in exporters:
        enabled, sources["exporter"] = True, "env:OTEL_TRACES_EXPORTER"
    else:
        if exporters:
            warnings.append(f"OTEL_TRACES_EXPORTER={','.join(exporters)}: only otlp and none are supported; ignored")
        if sources["endpoint"].startswith("env:"):
            enabled, sources["exporter"] = True, sources["endpoint"]
        else:
            enabled, sources["exporter"] = config.exporter == "otlp", origin("exporter")

    # routine-span ratio
    ratio, sources["sample_ratio"] = config.sample_ratio, origin("sample_ratio")
    sampler = get("OTEL_TRACES_SAMPLER").lower()
    if sampler in _SAMPLER_RATIOS:
        ratio, sources["sample_ratio"] = _SAMPLER_RATIOS[sampler], "env:OTEL_TRACES_SAMPLER"
    elif sampler in ("traceidratio", "parentbased_traceidratio"):
        try:
            value = float(get("OTEL_TRACES_SAMPLER_ARG") or "1.0")
            if not 0.0 <= value <= 1.0:
                raise ValueError
            ratio, sources["sample_ratio"] = value, "env:OTEL_TRACES_SAMPLER_ARG"
        except ValueError:
            warnings.append("OTEL_TRACES_SAMPLER_ARG: not a number from 0 to 1; ignored")
    elif sampler:
        warnings.append(f"OTEL_TRACES_SAMPLER={sampler}: not supported here; ignored")

    # resource: OTEL_SERVICE_NAME > service.name in OTEL_RESOURCE_ATTRIBUTES > YAML
    resource = _parse_resource_attributes(get("OTEL_RESOURCE_ATTRIBUTES"), warnings)
    service_name, sources["service_name"] = config.service_name, origin("service_name")
    if "service.name" in resource:
        service_name, sources["service_name"] = resource["service.name"], "env:OTEL_RESOURCE_ATTRIBUTES"
    if get("OTEL_SERVICE_NAME"):
        service_name, sources["service_name"] = get("OTEL_SERVICE_NAME"), "env:OTEL_SERVICE_NAME"

    interval, sources["export_interval_seconds"] = config.export_interval_seconds, origin("export_interval_seconds")
    if get("OTEL_BSP_SCHEDULE_DELAY"):
        try:
            value = float(get("OTEL_BSP_SCHEDULE_DELAY")) / 1000.0  # milliseconds, as the spec says
            if value <= 0:
                raise ValueError
            interval, sources["export_interval_seconds"] = value, "env:OTEL_BSP_SCHEDULE_DELAY"
        except ValueError:
            warnings.append("OTEL_BSP_SCHEDULE_DELAY: not a positive number of milliseconds; ignored")

    headers: dict[str, str] = {}
    for name in ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"):
        if get(name):
            from opentelemetry.util.re import parse_env_headers

            headers = dict(parse_env_headers(get(name), liberal=True))
            sources["headers"] = f"env:{name}"
            break

    return TracingSettings(
        enabled=enabled, endpoint=endpoint, sample_ratio=ratio, service_name=service_name,
        export_interval_seconds=interval, export_timeout_seconds=config.export_timeout_seconds,
        max_buffered_spans=config.max_buffered_spans, headers=headers, resource_attributes=resource,
        sources=sources, warnings=tuple(warnings))


def _traces_url(base: str) -> str:
    """``base`` + ``/v1/traces``, unless it already names the traces path (as the SDK does for the base URL)."""
    parts = urlsplit(base)
    if parts.path.rstrip("/").endswith(TRACES_PATH):
        return base
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + TRACES_PATH))


def _parse_resource_attributes(text: str, warnings: list[str]) -> dict[str, str]:
    """``key=value,key=value`` with percent-encoded values (the W3C Baggage format the spec names)."""
    attributes: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            warnings.append("OTEL_RESOURCE_ATTRIBUTES: an entry is not key=value; skipped")
            continue
        attributes[key.strip()] = unquote(value.strip())
    return attributes


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment (collector URLs can carry tokens in either)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparsable URL>"

