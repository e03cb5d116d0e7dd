"""Spans as JSON lines in a directory: the local stack's trace store, with no server to run.

Each process writes its own file (`<service>-<pid>.jsonl`, so processes never interleave a line), and
rotates it once (`.jsonl.1`) past a size, so the directory stays bounded. `sightline trace` reads every
file back and rebuilds a batch's trace from the span and parent ids.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

# The span attribute that names a batch: set on the API's request span and the classify activity's.
BATCH_ATTRIBUTE = "sightline.batch_id"


def _line(span: ReadableSpan, service: str) -> str:
    ctx = span.context
    parent = span.parent
    return json.dumps({
        "trace_id": format(ctx.trace_id, "032x") if ctx else "",
        "span_id": format(ctx.span_id, "016x") if ctx else "",
        "parent_id": format(parent.span_id, "016x") if parent else None,
        "name": span.name, "service": service, "kind": span.kind.name.lower(),
        "start_ns": span.start_time, "end_ns": span.end_time,
        "error": span.status.status_code == StatusCode.ERROR,
        "attributes": {k: v if isinstance(v, str | int | float | bool) else str(v)
                       for k, v in (span.attributes or {}).items()},
    }, separators=(",", ":"))


class SpanFileExporter(SpanExporter):
    """Appends finished spans to this process's file (called from the batch processor's thread)."""

    def __init__(self, directory: Path, service: str, max_bytes: int) -> None:
        self.directory = directory
        self.service = service
        self.max_bytes = max_bytes
        self.path = directory / f"{service}-{os.getpid()}.jsonl"
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(_line(s, self.service) + "\n" for s in spans)
        try:
            with self._lock:
                self.directory.mkdir(parents=True, exist_ok=True)
                if self.path.exists() and self.path.stat().st_size > self.max_bytes:
                    self.path.replace(self.path.with_suffix(".jsonl.1"))
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(text)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class SpanRecord:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    error: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)
    children: list[SpanRecord] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def read_spans(directory: Path) -> Iterator[SpanRecord]:
    """Every span in the directory's files; a line cut short by a crash is skipped."""
    if not directory.is_dir():
        return
    for path in sorted(directory.glob("*.jsonl*")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    d = json.loads(line)
                    yield SpanRecord(d["trace_id"], d["span_id"], d.get("parent_id"), d["name"], d["service"],
                                     d.get("kind", ""), int(d["start_ns"]), int(d["end_ns"]), bool(d.get("error")),
                                     dict(d.get("attributes") or {}))
                except (ValueError, KeyError, TypeError):
                    continue


def traces_of_batch(directory: Path, batch_id: str) -> dict[str, list[SpanRecord]]:
    """The spans of every trace that names this batch, by trace id (one, unless a resubmission started
    a stale batch's workflow again under another trace)."""
    spans = list(read_spans(directory))
    ids = {s.trace_id for s in spans if s.attributes.get(BATCH_ATTRIBUTE) == batch_id}
    out: dict[str, list[SpanRecord]] = {}
    for s in spans:
        if s.trace_id in ids:
            out.setdefault(s.trace_id, []).append(s)
    return out


def spans_of_trace(directory: Path, trace_id: str) -> list[SpanRecord]:
    return [s for s in read_spans(directory) if s.trace_id == trace_id]


def span_tree(spans: list[SpanRecord]) -> list[SpanRecord]:
    """The roots of a trace's spans (a span whose parent is missing counts as a root), each with its
    children in start order."""
    by_id = {s.span_id: s for s in spans}
    roots: list[SpanRecord] = []
    for s in sorted(spans, key=lambda s: s.start_ns):
        s.children = []
    for s in sorted(spans, key=lambda s: s.start_ns):
        parent = by_id.get(s.parent_id or "")
        (parent.children if parent is not None and parent is not s else roots).append(s)
    return roots
