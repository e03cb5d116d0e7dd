"""`sightline trace <batch id>`: a batch's spans as a tree with durations, read from the span files the
local stack writes under the data dir (settings.trace_exporter "file"): the waterfall of one batch from
the API request through its workflow and activity to serving, with no trace server to run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from infra.settings import get_settings
from infra.span_files import BATCH_ATTRIBUTE, SpanRecord, span_tree, spans_of_trace, traces_of_batch
from infra.telemetry import traces_dir

console = Console()

# Attributes worth a glance in the tree; the rest stay in the file (and in Jaeger).
_SHOWN = ("sightline.frames", "sightline.model", "http.route", "http.response.status_code", "temporalWorkflowID")
_BAR_WIDTH = 24


def _bar(span: SpanRecord, start: int, total: int) -> str:
    """Where the span sits in the trace's time, as a bar of `_BAR_WIDTH` cells."""
    if total <= 0:
        return ""
    begin = int(_BAR_WIDTH * (span.start_ns - start) / total)
    length = max(1, round(_BAR_WIDTH * (span.end_ns - span.start_ns) / total))
    begin = min(begin, _BAR_WIDTH - 1)
    return "·" * begin + "█" * min(length, _BAR_WIDTH - begin) + "·" * max(0, _BAR_WIDTH - begin - length)


def _label(span: SpanRecord, start: int, total: int) -> str:
    shown = ", ".join(f"{k.removeprefix('sightline.')}={span.attributes[k]}" for k in _SHOWN if k in span.attributes)
    offset_ms = (span.start_ns - start) / 1e6
    error = " [red]error[/red]" if span.error else ""
    return (f"[cyan]{_bar(span, start, total)}[/cyan] [bold]{escape(span.name)}[/bold] "
            f"[green]{span.duration_ms:.1f} ms[/green] [dim]+{offset_ms:.1f} ms {escape(span.service)}"
            f"{' ' + escape(shown) if shown else ''}[/dim]{error}")


def render(spans: list[SpanRecord], title: str) -> Tree:
    roots = span_tree(spans)
    start = min(s.start_ns for s in spans)
    total = max(s.end_ns for s in spans) - start
    tree = Tree(f"[bold]{escape(title)}[/bold] [dim]({len(spans)} spans, {total / 1e6:.1f} ms)[/dim]")

    def add(node: Tree, span: SpanRecord) -> None:
        child = node.add(_label(span, start, total))
        for c in span.children:
            add(child, c)

    for root in roots:
        add(tree, root)
    return tree


def trace_command(
    batch_id: Annotated[str, typer.Argument(help="the batch id (as the API answered it)")],
    trace_id: str = typer.Option("", "--trace-id", help="print this trace instead of looking the batch up"),
    directory: Path | None = typer.Option(None, "--dir", help="the span files (default: <data dir>/traces)"),
) -> None:
    """Print a batch's trace as a tree of spans with their durations."""
    where = directory or traces_dir(get_settings())
    found = {trace_id: spans_of_trace(where, trace_id)} if trace_id else traces_of_batch(where, batch_id)
    traces = {t: spans for t, spans in found.items() if spans}
    if not traces:
        console.print(f"no spans of batch {escape(batch_id)} under {where}: tracing writes there when "
                      "SIGHTLINE_TRACE_EXPORTER=file (the local default); sampled out, or older than the files "
                      f"kept? (spans name their batch in `{BATCH_ATTRIBUTE}`)", highlight=False)
        raise typer.Exit(1)
    for tid, spans in sorted(traces.items(), key=lambda kv: min(s.start_ns for s in kv[1])):
        console.print(render(spans, f"batch {batch_id} · trace {tid}"))
