"""The edge agent's parts that need no API: the durable queue (a real SQLite in WAL mode and real
files), the order batches are cut in, the rate cap and the backoff, the watched folder, the redaction
hook, and that the agent's imports stay off Temporal, Ray, the API's framework and torch."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest

from edge.capture import Capture, CaptureRefused, FolderWatcher
from edge.metrics import EdgeMetrics
from edge.model import ModelKeeper
from edge.pacing import Backoff, RateCap
from edge.queue import FrameQueue, LocalDecision, QueueFull
from edge.redaction import Redaction, RedactionUnavailable
from edge.settings import EdgeSettings
from edge.uploader import retry_after_s
from infra.store import sha256_hex
from vision.camera import generate_frames

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


def frame(i: int) -> bytes:
    return generate_frames("edge-unit", 1, seed=3, start=i)[0].jpeg()


def put(queue: FrameQueue, data: bytes, camera: str = "cam-1", captured_at: float = 1000.0, name: str = "") -> int:
    return queue.commit(queue.stage(data, "image/jpeg"), camera, name or f"f-{captured_at}.jpg", "test", captured_at,
                        LocalDecision("ok", 0.9, 0.2, False, "v1"))


def test_a_committed_frame_survives_reopening_and_its_batch_keeps_its_key(tmp_path: Path) -> None:
    queue = FrameQueue(tmp_path / "q", max_bytes=10**9)
    data = [frame(i) for i in range(3)]
    for i, d in enumerate(data):
        put(queue, d, captured_at=1000.0 + i)
    batch = queue.cut_batch(max_frames=2, max_bytes=10**9, max_wait_s=1, order="oldest-first", live_window_s=10,
                            now=1010.0)
    assert batch is not None and [f.sha256 for f in batch.frames] == [sha256_hex(d) for d in data[:2]]
    agent_id = queue.agent_id
    queue.close()  # as a SIGKILL leaves it: the batch cut, not accepted

    reopened = FrameQueue(tmp_path / "q", max_bytes=10**9)
    pending = reopened.pending_batch()
    assert reopened.agent_id == agent_id and pending is not None
    assert pending.idempotency_key == batch.idempotency_key == f"edge-{agent_id}-{batch.seq}"
    assert [reopened.read(f) for f in pending.frames] == data[:2]
    assert reopened.depth().frames == 3 and reopened.depth().bytes == sum(map(len, data))

    assert reopened.accept(pending, "batch:site:cam-1:" + pending.idempotency_key) == 2
    assert reopened.pending_batch() is None and reopened.depth().frames == 1
    assert not any(f.path.exists() for f in pending.frames)
    # Batch sequence numbers are never reused, so no later batch can be sent under an accepted key.
    later = reopened.cut_batch(max_frames=2, max_bytes=10**9, max_wait_s=1, order="oldest-first", live_window_s=10,
                               now=1010.0)
    assert later is not None and later.seq > pending.seq and later.idempotency_key != pending.idempotency_key


def test_past_the_disk_bound_nothing_is_written_and_acknowledged_frames_stay(tmp_path: Path) -> None:
    data = [frame(i) for i in range(4)]
    queue = FrameQueue(tmp_path / "q", max_bytes=len(data[0]) + len(data[1]) + 10)
    put(queue, data[0])
    put(queue, data[1], captured_at=1001.0)
    with pytest.raises(QueueFull, match="queue is full") as refused:
        queue.stage(data[2], "image/jpeg")
    assert refused.value.max_bytes == queue.max_bytes
    assert len(list(queue.files.iterdir())) == 2 and queue.depth().frames == 2
    batch = queue.cut_batch(max_frames=8, max_bytes=10**9, max_wait_s=0, order="oldest-first", live_window_s=10,
                            now=2000.0)
    assert batch is not None
    queue.accept(batch, "batch:s:c:k")
    put(queue, data[2])  # room again once the API took the others


def test_a_file_no_row_names_is_removed_at_start(tmp_path: Path) -> None:
    queue = FrameQueue(tmp_path / "q", max_bytes=10**9)
    staged = queue.stage(frame(0), "image/jpeg")  # the agent dies before its commit: never acknowledged
    kept = put(queue, frame(1))
    queue.close()
    reopened = FrameQueue(tmp_path / "q", max_bytes=10**9)
    assert not staged.path.exists()
    pending = reopened.cut_batch(max_frames=8, max_bytes=10**9, max_wait_s=0, order="oldest-first", live_window_s=1,
                                 now=10**10)
    assert pending is not None and [f.seq for f in pending.frames] == [kept]
    assert list(reopened.files.iterdir()) == [pending.frames[0].path]
    assert reopened.depth().bytes == pending.frames[0].size_bytes  # the orphan's bytes do not count


def test_live_first_sends_the_newest_frames_before_the_backlog(tmp_path: Path) -> None:
    queue = FrameQueue(tmp_path / "q", max_bytes=10**9)
    for t in range(10):  # a backlog from an outage, 100 s old
        put(queue, frame(t), captured_at=900.0 + t, name=f"old-{t}.jpg")
    for t in range(3):  # live frames, the oldest 3 s old
        put(queue, frame(20 + t), captured_at=997.0 + t, name=f"live-{t}.jpg")

    def cut(order: str, now: float = 1000.0):
        return queue.cut_batch(max_frames=4, max_bytes=10**9, max_wait_s=2, order=order,  # type: ignore[arg-type]
                               live_window_s=10, now=now)

    first = cut("live-first")
    assert first is not None and [f.filename for f in first.frames] == ["live-0.jpg", "live-1.jpg", "live-2.jpg"]
    queue.accept(first, "b1")
    second = cut("live-first")
    assert second is not None and [f.filename for f in second.frames] == [f"old-{t}.jpg" for t in range(4)]
    queue.accept(second, "b2")
    put(queue, frame(30), captured_at=999.5, name="live-3.jpg")  # half a second old: not ready on its own
    third = cut("oldest-first")
    assert third is not None and [f.filename for f in third.frames] == [f"old-{t}.jpg" for t in range(4, 8)]
    queue.accept(third, "b3")
    fourth = cut("live-first")  # the backlog's rest; the young live frame waits for its batch time
    assert fourth is not None and [f.filename for f in fourth.frames] == ["old-8.jpg", "old-9.jpg", "live-3.jpg"]


def test_the_backlog_goes_in_bigger_batches_than_live_frames(tmp_path: Path) -> None:
    queue = FrameQueue(tmp_path / "q", max_bytes=10**9)
    data = frame(0)
    for t in range(12):
        put(queue, data, captured_at=900.0 + t)  # 100 s old: backlog
    for t in range(6):
        put(queue, data, captured_at=995.0 + t * 0.5)  # live
    for order in ("oldest-first", "live-first"):
        batch = queue.cut_batch(max_frames=4, max_bytes=10**9, max_wait_s=1, order=order,
                                live_window_s=10, backlog_max_frames=10, now=1000.0)
        assert batch is not None
        sizes = len(batch.frames), batch.frames[0].captured_at < 990
        assert sizes == ((10, True) if order == "oldest-first" else (4, False)), (order, sizes)
        queue.accept(batch, f"b-{order}")


def test_a_batch_is_one_camera_and_stays_under_its_byte_bound(tmp_path: Path) -> None:
    queue = FrameQueue(tmp_path / "q", max_bytes=10**9)
    sizes = []
    for t in range(4):
        data = frame(t)
        sizes.append(len(data))
        put(queue, data, camera="cam-a", captured_at=900.0 + t)
    put(queue, frame(9), camera="cam-b", captured_at=950.0)
    batch = queue.cut_batch(max_frames=10, max_bytes=sizes[0] + sizes[1], max_wait_s=1, order="oldest-first",
                            live_window_s=10, now=1000.0)
    assert batch is not None and batch.camera_id == "cam-a" and len(batch.frames) == 2


def test_the_rate_cap_holds_over_any_window() -> None:
    now = [0.0]
    cap = RateCap(frames_per_s=20, bytes_per_s=10**9, clock=lambda: now[0])
    sent = []
    while now[0] < 30:
        wait = cap.wait_for(16, 16_000)
        if wait > 0:
            now[0] += wait
            continue
        cap.take(16, 16_000)
        sent.append(now[0])
    for start in range(0, 25):
        in_window = 16 * sum(start <= t < start + 5 for t in sent)
        assert in_window <= 20 * 5 + 20 + 16, (start, in_window)
    assert 16 * len(sent) >= 20 * 30 - 16  # and it does use its rate
    bytes_cap = RateCap(frames_per_s=1000, bytes_per_s=100_000, clock=lambda: now[0])
    bytes_cap.take(16, 300_000)  # a batch bigger than a second's bytes goes, then the debt is paid
    assert bytes_cap.wait_for(16, 300_000) == pytest.approx(3.0)


def test_backoff_is_jittered_below_a_growing_ceiling() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [min(8.0, 0.5 * 2**i) for i in range(8)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_s("inf") is None and retry_after_s("nan") is None and retry_after_s("86400") == 300.0


def test_a_camera_that_must_be_redacted_is_refused_without_a_redactor() -> None:
    redaction = Redaction(["lobby"])
    assert redaction.apply(b"x", "line-1") == b"x"
    with pytest.raises(RedactionUnavailable, match="must be redacted"):
        redaction.apply(b"x", "lobby")
    assert Redaction(["lobby"], lambda data, camera: b"blurred").apply(b"x", "lobby") == b"blurred"


def _capture(tmp_path: Path, **settings: object) -> tuple[Capture, FrameQueue, EdgeMetrics]:
    s = EdgeSettings(_env_file=None, data_dir=tmp_path / "edge", model_ref="", trusted_keys=["unused"],
                     **settings)  # type: ignore[arg-type]
    metrics = EdgeMetrics()
    queue = FrameQueue(s.resolved_data_dir / "queue", s.max_queue_bytes)
    keeper = ModelKeeper(None, s, metrics)  # type: ignore[arg-type]  # no model: capture only
    return Capture(queue, keeper, Redaction(s.redact_cameras), s, metrics, lambda: None), queue, metrics


async def test_capture_refuses_what_the_api_would_refuse(tmp_path: Path) -> None:
    capture, queue, metrics = _capture(tmp_path, max_frame_bytes=50_000, redact_cameras=["lobby"])
    for data, camera, status, reason in [(b"GIF89a not accepted", "cam", 415, "type"),
                                         (b"\xff\xd8\xff" + b"0" * 60_000, "cam", 413, "size"),
                                         (frame(0), "bad:camera", 422, "camera_id"),
                                         (frame(0), "lobby", 422, "redaction")]:
        with pytest.raises(CaptureRefused) as refused:
            await capture.take(data, camera_id=camera)
        assert (refused.value.status, refused.value.reason) == (status, reason)
        assert metrics.refused.labels(reason)._value.get() == 1
    assert queue.depth().frames == 0
    taken = await capture.take(b"\xff\xd8\xff corrupt but a JPEG by its header", camera_id="cam")
    assert taken.rejected is None and taken.decision is None  # no model: the API decides whether it is a frame
    assert queue.depth().frames == 1


async def test_watched_files_are_taken_once_and_removed(tmp_path: Path) -> None:
    capture, queue, _ = _capture(tmp_path)
    watched = tmp_path / "watched"
    (watched / "line-7").mkdir(parents=True)
    (watched / "a.jpg").write_bytes(frame(0))
    (watched / "line-7" / "b.jpg").write_bytes(frame(1))
    (watched / ".c.jpg").write_bytes(frame(2))  # a writer's temporary name: left alone
    (watched / "d.jpg").write_bytes(b"not an image")
    # A file the agent was taking when it was killed, already queued: removed, not taken twice.
    (watched / ".taking").mkdir()
    queued = frame(3)
    put(queue, queued, camera="line-7", name="e.jpg")
    queue.commit(queue.stage(queued, "image/jpeg"), "line-7", "e2.jpg", "folder", 1.0)
    (watched / ".taking" / "line-7+e2.jpg").write_bytes(queued)
    (watched / ".taking" / "edge-cam+f.jpg").write_bytes(frame(4))  # not queued before the kill: taken now
    watcher = FolderWatcher(capture, queue, watched, "edge-cam", interval_s=0.1, settle_s=0)
    assert await watcher.scan() == 3  # a.jpg, b.jpg, and d.jpg moved aside as rejected
    rows = {(f.camera_id, f.filename) for f in _all_frames(queue)}
    assert rows == {("line-7", "e.jpg"), ("line-7", "e2.jpg"), ("edge-cam", "f.jpg"), ("edge-cam", "a.jpg"),
                    ("line-7", "b.jpg")}
    assert sorted(p.name for p in watched.rglob("*") if p.is_file()) == [".c.jpg", "d.jpg", "d.jpg.reason.txt"]
    assert "not a JPEG" in (watched / ".rejected" / "d.jpg.reason.txt").read_text()
    assert await watcher.scan() == 0


def _all_frames(queue: FrameQueue):
    batch = queue.cut_batch(max_frames=100, max_bytes=10**9, max_wait_s=0, order="oldest-first", live_window_s=1,
                            now=10**10)
    frames = []
    while batch is not None:
        frames += batch.frames
        queue.accept(batch, f"b{batch.seq}")
        batch = queue.cut_batch(max_frames=100, max_bytes=10**9, max_wait_s=0, order="oldest-first",
                                live_window_s=1, now=10**10)
    return frames


def test_the_agent_imports_no_temporal_ray_torch_or_web_framework() -> None:
    # The layer test reads each module's own imports; this one runs the agent's whole import graph.
    probe = ("import sys, edge.agent, edge.model, edge.link, cli.edge; "
             "print(sorted(m for m in ('temporalio', 'ray', 'torch', 'fastapi', 'starlette') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_settings_refuse_an_endpoint_beyond_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        EdgeSettings(_env_file=None, listen_host="0.0.0.0")
    assert EdgeSettings(_env_file=None, listen_host="::1").local_url == "http://[::1]:8010"


def test_the_link_refuses_a_target_beyond_loopback_before_any_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pure check of the address: the constructor refuses it, and no socket is ever opened to it."""
    import socket

    from edge.link import LinkProxy

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the refused link touched the network: {args!r}")

    for name in ("connect", "connect_ex", "sendto", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse)
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):  # nor a lookup
        monkeypatch.setattr(socket, name, refuse)
    with pytest.raises(ValueError, match="loopback"):
        LinkProxy("10.0.0.1", 80)


async def test_the_link_is_cut_restored_and_loses_answers_on_loopback_only() -> None:
    from edge.link import LinkProxy

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    link = await LinkProxy("127.0.0.1", server.sockets[0].getsockname()[1]).start()

    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"ping")
        await writer.drain()
        try:
            return await reader.read(100)
        except ConnectionResetError:
            return b""
        finally:
            writer.close()

    assert await ask() == b"ping"
    link.cut()
    assert await ask() == b""
    link.restore()
    assert await ask() == b"ping"
    link.hold()
    assert await ask() == b""  # the server answered; the answer stayed in the link
    assert link.held == bytearray(b"ping")
    link.release()
    await link.close()
    server.close()


def test_status_reads_the_data_dir_while_no_agent_runs(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from cli.edge import edge_app
    from infra.postgres_server import free_port

    queue = FrameQueue(tmp_path / "edge" / "queue", max_bytes=10**9)
    for t in range(3):
        put(queue, frame(t), captured_at=1000.0 + t)
    queue.close()
    result = CliRunner().invoke(edge_app, ["status", "--data-dir", str(tmp_path / "edge"), "--port", str(free_port()),
                                           "--json"])
    assert result.exit_code == 3, result.output  # not running
    report = json.loads(result.output)
    assert report["running"] is False and report["queue_frames"] == 3 and report["oldest_frame_age_s"] > 0
    table = CliRunner().invoke(edge_app, ["status", "--data-dir", str(tmp_path / "edge"), "--port", str(free_port())])
    assert "not running" in table.output and "3 frames" in table.output
