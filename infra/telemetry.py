"""Tracing set-up, one call per process (API, worker, each Serve replica): the exporter and sampling the
settings choose, and the few helpers the rest of the code uses to carry a trace across a hop.

One batch is one trace: the API's request span (FastAPI instrumentation) is its root; Temporal's
TracingInterceptor on the client carries it through the workflow start, the workflow and each activity
(workers built from the client inherit the interceptor); the serving client carries it into Ray Serve
in a `traceparent` header (or beside the request on the handle), where the preprocessor and the model
add theirs. Spans go to OTLP (production), to JSON lines under the data dir (the local stack:
`sightline trace <batch id>` reads them), or nowhere.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context

from infra.log import get_logger

if TYPE_CHECKING:
    from infra.settings import Settings

log = get_logger(__name__)

SERVICE_PREFIX = "sightline-"


@dataclass(frozen=True)
class TracingOptions:
    """The tracing part of the settings as plain values, so Ray can ship it to a Serve replica."""

    exporter: str = "none"  # "file", "otlp" or "none"
    directory: str = ""  # the span files' directory, for "file"
    otlp_endpoint: str = ""
    sample_ratio: float = 1.0
    file_max_bytes: int = 64 * 1024 * 1024

    @property
    def enabled(self) -> bool:
        return self.exporter != "none" and self.sample_ratio > 0


def traces_dir(settings: Settings) -> Path:
    return settings.resolved_data_dir / "traces"


def tracing_options(settings: Settings) -> TracingOptions:
    return TracingOptions(settings.trace_exporter, str(traces_dir(settings)), settings.otlp_endpoint,
                          settings.trace_sample_ratio, settings.trace_file_max_bytes)


_lock = threading.Lock()
_configured: TracingOptions | None = None


def configure_tracing(options: TracingOptions, service: str) -> bool:
    """Install this process's tracer provider (once: OpenTelemetry's global provider is set once per
    process; a second call with other options keeps the first and says so). Returns whether spans are
    exported."""
    global _configured
    with _lock:
        if _configured is not None:
            if _configured != options:
                log.warning("tracing already configured in this process; keeping the first configuration",
                            exporter=_configured.exporter)
            return _configured.enabled
        _configured = options
        if not options.enabled:
            return False
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        exporter: SpanExporter
        if options.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=options.otlp_endpoint)
        elif options.exporter == "file":
            from infra.span_files import SpanFileExporter

            exporter = SpanFileExporter(Path(options.directory), service, options.file_max_bytes)
        else:
            raise ValueError(f"unknown trace exporter {options.exporter!r}: use file, otlp or none")
        provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_PREFIX + service}),
                                  sampler=ParentBased(TraceIdRatioBased(options.sample_ratio)))
        # Spans leave in batches, off the request path, once a second.
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
        trace.set_tracer_provider(provider)
        return True


def tracing_configured() -> bool:
    return _configured is not None and _configured.enabled


def flush_spans(timeout_ms: int = 5000) -> None:
    """Export what this process holds now (tests, and a process on its way out)."""
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush(timeout_ms)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def current_trace_id() -> str | None:
    """The sampled trace this code runs in, as 32 hex digits; None when nothing is traced."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid and ctx.trace_flags.sampled else None


def trace_headers() -> dict[str, str]:
    """W3C trace context headers for an outgoing call (empty when nothing is traced)."""
    carrier: dict[str, str] = {}
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, Any] | None) -> Context | None:
    """The caller's context from its headers (None: none was sent)."""
    if not carrier or "traceparent" not in carrier:
        return None
    return propagate.extract(dict(carrier))


@asynccontextmanager
async def span(name: str, tracer_: trace.Tracer | None = None, **attributes: Any) -> AsyncIterator[trace.Span]:
    """A child span of the current one around an `async with` block (it joins an existing
    `async with` line without re-indenting the block)."""
    with (tracer_ or trace.get_tracer(__name__)).start_as_current_span(name, attributes=attributes or None) as s:
        yield s
