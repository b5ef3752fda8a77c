"""A local OTLP/HTTP trace receiver for tests and benchmarks (tooling.md §4): aiohttp on 127.0.0.1:0.

It decodes ``ExportTraceServiceRequest`` bodies into ``ReceivedSpan`` records.
aiohttp already inflates ``Content-Encoding: gzip`` request bodies, so the body
is gunzipped here only when it still starts with the gzip magic.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR
KIND_INTERNAL, KIND_CLIENT = 1, 3


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    events: int = 0
    links: int = 0

    @property
    def error(self) -> bool:
        return self.status_code == STATUS_ERROR


@dataclass
class OtlpReceiver:
    """``async with OtlpReceiver() as rx:`` then point an exporter at ``rx.endpoint``."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    endpoint: str = ""

    async def __aenter__(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        self.requests += 1
        self.headers_seen.append(dict(request.headers))
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(ReceivedSpan(
                        name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(), kind=s.kind, status_code=s.status.code,
                        attributes={a.key: _value(a.value) for a in s.attributes}, resource=resource,
                        scope=ss.scope.name, events=len(s.events), links=len(s.links)))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]

    def by_id(self) -> dict[str, ReceivedSpan]:
        return {s.span_id: s for s in self.spans}
