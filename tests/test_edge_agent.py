"""The edge agent on the real stack: the API as its own process (`python -m api.main`, killed with
SIGKILL when a test needs it gone) on the session's Temporal and Postgres (a database of this module's
own, so the registry's aliases can move without touching other modules), the real batch workflows on
workers in this process behind the scripted classifier, and the agent itself as a process (`python -m
edge`) or on this event loop.

What is proved: the model files reach an ingest key signed and checked; local decisions answer within
50 ms, follow a promotion and refuse a tampered, untrusted or unsigned model while the last good one
stays, also from disk with the network down; local and central predictions are both recorded, and the
disagreements are the ones scripted; the disk bound refuses new frames and loses none acknowledged;
429 with Retry-After is obeyed; an agent SIGKILLed while the API's answer is lost resends under the
same key and nothing is lost or duplicated; and the API killed for 60 s under a 10 fps camera: every
frame captured is accepted exactly once (names and sha256 against the regenerated frames), the backlog
drains within the rate cap, live frames first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import psycopg
import pytest
import pytest_asyncio
import uvicorn
from onnx import TensorProto, helper, numpy_helper
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from cli.edge import fetch_status
from edge.agent import EdgeAgent, running
from edge.link import LinkProxy
from edge.model import LocalModel, ModelFiles
from edge.settings import EdgeSettings
from edge.status import queue_database, recent_disagreements
from infra.db import DbPool, open_pool
from infra.postgres_server import free_port
from infra.schema_migrations import apply_migrations
from infra.settings import Settings
from infra.store import LocalStore, frame_key, sha256_hex
from infra.tables.api_keys import create_key
from tests.conftest import ScriptedClassifier
from tests.polling import eventually, wait_until
from vision.artifacts import MANIFEST, ONNX, SIGNATURE, Manifest, publish, signature_key
from vision.camera import CLASSES, generate_frames
from vision.processing import Processing
from vision.registry import ModelRegistry
from vision.signatures import ModelSigner, verify

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(300)
INPUT_SIZE = 32


# ---- a small real model: an ONNX graph with serving's interface (uint8 NHWC in, logits and novelty out) ----

def linear_model(seed: int) -> bytes:
    """Logits from the frame's mean colour, novelty from its distance to a grey-blue part: a real ONNX
    graph (built with onnx.helper, no torch), so downloading, checking, loading and deciding are the
    production path's; what it decides does not matter here."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 8, (3, len(CLASSES))).astype(np.float32)
    bias = rng.normal(0, 1, len(CLASSES)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["colour"]),
        helper.make_node("MatMul", ["colour", "weights"], ["z"]),
        helper.make_node("Add", ["z", "bias"], ["logits"]),
        helper.make_node("Sub", ["colour", "centre"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("ReduceSum", ["d2", "sum_axes"], ["s"], keepdims=0),
        helper.make_node("Mul", ["s", "spread"], ["novelty"]),
    ]
    initializers = [numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
                    numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias"),
                    numpy_helper.from_array(np.array([0.4, 0.4, 0.45], np.float32), "centre"),
                    numpy_helper.from_array(np.array([1], np.int64), "sum_axes"),
                    numpy_helper.from_array(np.array(10.0, np.float32), "spread")]
    graph = helper.make_graph(
        nodes, "edge-test",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", INPUT_SIZE, INPUT_SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(CLASSES)]),
         helper.make_tensor_value_info("novelty", TensorProto.FLOAT, ["N"])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ---- the stack: the API as a process, workers here ----

class ApiProcess:
    """`python -m api.main` with the module's settings; SIGKILL and start again on the same port."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.url = settings.resolved_api_url
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")},
                    "SIGHTLINE_DATA_DIR": str(settings.data_dir), "SIGHTLINE_DATABASE_URL": settings.database_url,
                    "SIGHTLINE_OBJECT_STORE_URL": settings.object_store_url,
                    "SIGHTLINE_TEMPORAL_ADDRESS": settings.temporal_address,
                    "SIGHTLINE_ORCHESTRATION_TASK_QUEUE": settings.orchestration_task_queue,
                    "SIGHTLINE_INFERENCE_TASK_QUEUE": settings.inference_task_queue,
                    "SIGHTLINE_API_HOST": settings.api_host, "SIGHTLINE_API_PORT": str(settings.api_port),
                    "SIGHTLINE_QA_SAMPLE_RATE": "0", "SIGHTLINE_LOG_JSON": "true", "SIGHTLINE_LOG_LEVEL": "WARNING"}
        self.proc: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "api.main"], env=self.env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            wait_until(self.answers, timeout=90, interval=0.2, message="the API to answer /healthz")
        except AssertionError:
            raise AssertionError(f"the API did not start; its log:\n{self.log.read_text()[-3000:]}") from None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Stack:
    root: Path
    settings: Settings
    store: LocalStore
    registry: ModelRegistry
    signer: ModelSigner
    classifier: ScriptedClassifier
    pool: DbPool
    keys: dict[str, str]
    api: ApiProcess
    client: Client

    @property
    def url(self) -> str:
        return self.api.url

    def publish(self, seed: int = 0, *, signer: ModelSigner | None = None, tamper: bool = False,
                unsigned: bool = False) -> str:
        """A registered version of the linear model, signed by the stack's key (or `signer`); `tamper`
        alters its ONNX file in the store after signing, `unsigned` removes its signature."""
        signer = signer or self.signer
        version, number = self.registry.reserve_version()
        _, key, sha = publish(self.store, version, "linear-test", Processing(CLASSES, input_size=INPUT_SIZE),
                              {ONNX: linear_model(seed)}, {}, None, None, signer=signer)
        if tamper:
            onnx_key = f"models/{version}/{ONNX}"
            data = bytearray(self.store.get(onnx_key))
            data[-1] ^= 0xFF
            self.store.put(onnx_key, bytes(data))
        if unsigned:
            self.store.delete(signature_key(key))
        self.registry.register(version, number, "linear-test", key, sha, created_by="edge tests",
                               signature_key_id=signer.key_id)
        return version

    def promote(self, version: str) -> None:
        self.registry.set_alias("production", version, "edge tests", "a rollout's promotion")

    def local_model(self, version: str) -> LocalModel:
        found = self.registry.get(version)
        assert found is not None
        files = ModelFiles(self.store.get(found.manifest_key), self.store.get(signature_key(found.manifest_key)),
                           self.store.get(f"models/{version}/{ONNX}"))
        return LocalModel(files, [self.signer.public_text()])

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    async def accepted(self, site: str) -> list[tuple[str, str]]:
        """(filename, sha256) of every frame the API accepted for the site, one row per frame."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT f.filename, f.sha256 FROM frames f JOIN batches b USING (batch_id) WHERE b.site_id = %s",
                (site,))
            return sorted((r["filename"], r["sha256"]) for r in await cur.fetchall())

    async def batches(self, site: str) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                """SELECT b.batch_id, b.created_at, array_agg(f.filename ORDER BY f.position) AS filenames
                     FROM batches b JOIN frames f USING (batch_id) WHERE b.site_id = %s
                    GROUP BY b.batch_id, b.created_at ORDER BY b.created_at""", (site,))
            return list(await cur.fetchall())


@pytest.fixture(scope="module")
def edge_database(postgres_url: str) -> Iterator[str]:
    """A database of this module's own on the session's server: the registry's aliases move here."""
    base = postgres_url.rpartition("/")[0]
    name = f"sightline_edge_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    apply_migrations(f"{base}/{name}")
    yield f"{base}/{name}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="module")
async def stack(edge_database: str, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory,
                ) -> AsyncIterator[Stack]:
    from workers.inference import inference_worker
    from workers.orchestration import orchestration_worker

    root = tmp_path_factory.mktemp("edge-stack")
    queue = f"edge-{uuid.uuid4().hex[:8]}"
    settings = Settings(_env_file=None, data_dir=root / "api", database_url=edge_database,
                        object_store_url=f"file://{root / 'objects'}",
                        temporal_address=temporal_env.client.service_client.config.target_host,
                        orchestration_task_queue=queue, inference_task_queue=f"{queue}-inference",
                        api_host="127.0.0.1", api_port=free_port(), qa_sample_rate=0.0)
    store = LocalStore(root / "objects")
    registry = ModelRegistry(edge_database)
    signer = ModelSigner.generate()
    async with open_pool(edge_database, max_size=8) as pool:
        async with pool.connection() as conn:
            keys = {role: (await create_key(conn, f"edge {role}", role)).raw_key
                    for role in ("ingest", "ml-engineer", "reviewer", "ops")}
            keys["scoped"] = (await create_key(conn, "edge scoped", "ingest", site_ids=["plant-z"])).raw_key
        api = ApiProcess(settings, root / "api.log")
        classifier = ScriptedClassifier(store)
        client = temporal_env.client
        stack = Stack(root, settings, store, registry, signer, classifier, pool, keys, api, client)
        stack.promote(stack.publish(seed=1))
        await asyncio.to_thread(api.start)
        try:
            async with orchestration_worker(client, pool, store, settings), \
                    inference_worker(client, classifier, pool, settings):
                yield stack
        finally:
            api.stop()


def agent_settings(stack: Stack, data_dir: Path, site: str, **overrides: Any) -> EdgeSettings:
    values: dict[str, Any] = dict(
        api_url=stack.url, api_key=stack.keys["ingest"], site_id=site, camera_id="cam-1", data_dir=data_dir,
        listen_port=0, trusted_keys=[stack.signer.public_text()], model_poll_interval_s=0.3,
        reconcile_interval_s=0.5, batch_max_frames=8, batch_max_wait_s=0.3, backoff_initial_s=0.2, backoff_max_s=1.0,
        shutdown_drain_s=0.0, request_timeout_s=15.0)
    values.update(overrides)
    return EdgeSettings(_env_file=None, **values)


def generated(camera: str, count: int, start: int = 0) -> list[bytes]:
    return [f.jpeg() for f in generate_frames(camera, count, seed=5, start=start)]


async def post(local: httpx.AsyncClient, data: bytes, **params: str) -> httpx.Response:
    return await local.post("/frames", content=data, params=params, headers={"content-type": "image/jpeg"})


def metric(text: str, name: str) -> float:
    """A sample's value from Prometheus text, `name` with its labels as exported (0 when absent)."""
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    return 0.0


async def until(predicate: Callable[[], object], timeout: float, message: str) -> None:
    """Poll a plain predicate without blocking the event loop the in-process agent runs on."""
    async def check() -> object:
        return predicate()

    await eventually(check, timeout=timeout, message=message)


# ---- the model's way to the edge ----

async def test_edge_keys_download_the_signed_model_files(stack: Stack) -> None:
    production = stack.registry.resolve("production")
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        manifest = await http.get("/v1/models/production/artifacts/manifest.json", headers=stack.auth("ingest"))
        assert manifest.status_code == 200, manifest.text
        assert manifest.headers["x-sightline-model-version"] == production.version
        assert manifest.headers["etag"] == f'"{production.manifest_sha256}"' == f'"{sha256_hex(manifest.content)}"'
        unchanged = await http.get("/v1/models/production/artifacts/manifest.json",
                                   headers={**stack.auth("ingest"), "If-None-Match": manifest.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.content == b""
        base = f"/v1/models/{production.version}/artifacts"
        sig = await http.get(f"{base}/{SIGNATURE}", headers=stack.auth("ingest"))
        assert verify(manifest.content, sig.content, [stack.signer.public_text()]) == stack.signer.key_id
        model = await http.get(f"{base}/{ONNX}", headers=stack.auth("ingest"))
        listed = Manifest.from_json(manifest.content).files[ONNX]
        assert model.headers["etag"] == f'"{listed["sha256"]}"' == f'"{sha256_hex(model.content)}"'
        for role, expected in (("scoped", 200), ("ml-engineer", 200), ("reviewer", 403), ("ops", 403)):
            answer = await http.get(f"{base}/{MANIFEST}", headers=stack.auth(role))
            assert answer.status_code == expected, (role, answer.text)
        assert (await http.get(f"{base}/{MANIFEST}")).status_code == 401
        for path in (f"{base}/weights.pt", f"{base}/model_card.json", "/v1/models/v99999/artifacts/model.onnx",
                     "/v1/models/shadow/artifacts/manifest.json"):
            assert (await http.get(path, headers=stack.auth("ingest"))).status_code == 404, path


async def test_local_decisions_follow_a_promotion_and_refuse_bad_models(stack: Stack, tmp_path: Path) -> None:
    first = stack.registry.resolve("production").version
    settings = agent_settings(stack, tmp_path / "edge", "edge-models")
    agent = EdgeAgent(settings)

    async def model_is(version: str) -> bool:
        return agent.models.current is not None and agent.models.current.version == version

    async with running(agent), httpx.AsyncClient(base_url=agent.local_url, timeout=30) as local:
        await eventually(lambda: model_is(first), timeout=30, message=f"the agent to load {first}")
        reference = stack.local_model(first)
        frames = generated("edge-models", 30)
        took = []
        for i, data in enumerate(frames):
            started = time.perf_counter()
            answer = await post(local, data, camera_id="cam-m", filename=f"m-{i}.jpg")
            took.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.text
            expected, got = reference.decide(data), answer.json()["prediction"]
            assert (got["label"], got["confidence"], got["novelty"], got["unfamiliar"], got["model_version"]) == (
                expected.label, expected.confidence, expected.novelty, expected.unfamiliar, first)
            assert answer.json()["queued"] is True
        assert statistics.median(took) < 0.050, f"local decisions took {statistics.median(took) * 1000:.1f} ms (median)"

        promoted = stack.publish(seed=2)
        stack.promote(promoted)
        await eventually(lambda: model_is(promoted), timeout=30, message=f"the agent to follow {promoted}")
        answer = await post(local, frames[0], camera_id="cam-m")
        assert answer.json()["prediction"]["model_version"] == promoted

        for bad, why in ((stack.publish(seed=3, tamper=True), "sha256"),
                         (stack.publish(seed=3, signer=ModelSigner.generate()), "not trusted"),
                         (stack.publish(seed=3, unsigned=True), "no signature")):
            stack.promote(bad)

            async def refused(version: str = bad, reason: str = why) -> bool:
                refusal = agent.models.refusal or ""
                return version in refusal and reason in refusal

            await eventually(refused, timeout=30, message=f"{bad} to be refused ({why})")
            assert await model_is(promoted)
            answer = await post(local, frames[1], camera_id="cam-m")
            assert answer.json()["prediction"]["model_version"] == promoted
        assert metric(agent.render_metrics().decode(), "sightline_edge_model_refusals_total") == 3
        stack.promote(promoted)  # the rollback: the alias is back where the agent is

    # The last good model is kept on disk: an agent started while the API is out of reach decides with it.
    offline = EdgeAgent(settings.model_copy(update={"api_url": f"http://127.0.0.1:{free_port()}"}))
    async with running(offline), httpx.AsyncClient(base_url=offline.local_url, timeout=30) as local:
        answer = await post(local, frames[2], camera_id="cam-m")
        assert answer.status_code == 200 and answer.json()["prediction"]["model_version"] == promoted
        assert offline.status().last_contact_at is None


async def test_local_and_central_predictions_are_both_recorded(stack: Stack, tmp_path: Path) -> None:
    production = stack.publish(seed=6)
    stack.promote(production)
    reference = stack.local_model(production)
    frames = generated("edge-agree", 16)
    disagreeing = set()
    for i, data in enumerate(frames):
        local_label = reference.decide(data).label
        central = local_label if i % 2 == 0 else next(c for c in CLASSES if c != local_label)
        if central != local_label:
            disagreeing.add(f"a-{i}.jpg")
        stack.classifier.script(frame_key(sha256_hex(data)), central, 0.95)
    agent = EdgeAgent(agent_settings(stack, tmp_path / "edge", "edge-agree"))
    async with running(agent), httpx.AsyncClient(base_url=agent.local_url, timeout=30) as local:
        await until(lambda: agent.models.current is not None, 30, "the model")
        for i, data in enumerate(frames):
            assert (await post(local, data, camera_id="cam-a", filename=f"a-{i}.jpg")).status_code == 200
        await until(lambda: agent.status().compared == len(frames), 90, "central predictions of every frame")
        # The counters move just after the rows (the reconciler counts what its write recorded).
        await until(lambda: metric(agent.render_metrics().decode(), "sightline_edge_predictions_compared_total") == 16,
                    10, "the comparison counters")
        status = agent.status()
        assert status.disagreements == len(disagreeing) == 8
        assert status.version_pairs == {f"{production} -> {ScriptedClassifier.model_version}": len(frames)}
        listed = recent_disagreements(queue_database(agent.settings), limit=50)
        assert {d["filename"] for d in listed} == disagreeing
        assert all(d["local_label"] != d["central_label"] for d in listed)
        text = agent.render_metrics().decode()
        assert metric(text, "sightline_edge_prediction_disagreements_total") == 8
        assert metric(text, "sightline_edge_predictions_compared_total") == 16
        # `sightline edge status` asks the running agent (off this event loop, where the agent runs).
        port = int(agent.local_url.rsplit(":", 1)[1])
        report = await asyncio.to_thread(fetch_status, agent.settings.model_copy(update={"listen_port": port}))
        assert report.running and (report.compared, report.disagreements) == (16, 8)
        assert report.model_version == production and report.last_contact_at is not None


# ---- store and forward ----

async def test_past_the_disk_bound_new_frames_are_refused_and_none_acknowledged_is_lost(stack: Stack,
                                                                                         tmp_path: Path) -> None:
    site = "edge-full"
    link = await LinkProxy("127.0.0.1", stack.settings.api_port).start()
    link.cut()
    frames = generated(site, 12)
    bound = sum(len(f) for f in frames[:5]) + 10
    agent = EdgeAgent(agent_settings(stack, tmp_path / "edge", site, api_url=link.url, max_queue_bytes=bound,
                                     model_ref=""))
    try:
        async with running(agent), httpx.AsyncClient(base_url=agent.local_url, timeout=30) as local:
            answers = [await post(local, data, filename=f"full-{i}.jpg") for i, data in enumerate(frames)]
            acked = [(f"full-{i}.jpg", sha256_hex(d)) for i, (d, a) in enumerate(zip(frames, answers, strict=True))
                     if a.status_code == 200]
            refused = [a for a in answers if a.status_code != 200]
            assert len(acked) == 5 and len(refused) == 7
            assert all(a.status_code == 507 and a.headers["retry-after"] for a in refused)
            assert "queue is full" in refused[0].json()["detail"] and refused[0].json()["reason"] == "disk_bound"
            text = agent.render_metrics().decode()
            assert metric(text, 'sightline_edge_frames_refused_total{reason="disk_bound"}') == 7
            assert metric(text, "sightline_edge_queue_frames") == 5
            link.restore()
            await until(lambda: agent.status().queue_frames == 0, 60, "the queue to drain")
            assert await stack.accepted(site) == sorted(acked)
            assert (await post(local, frames[5], filename="after.jpg")).status_code == 200  # room again
    finally:
        await link.close()


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def test_admission_429_is_obeyed_with_retry_after(stack: Stack, tmp_path: Path,
                                                         temporal_client: Client) -> None:
    """An API of its own on this event loop, on a task queue no worker polls at first, taking 3 frames a
    batch and admitting 2 batches in flight per site: the agent's first batch of 4 is refused as too
    large (413) and cut again in halves; the third batch is answered 429 with Retry-After: 2 until a
    worker comes and the batches complete."""
    from api.main import create_app
    from workers.inference import inference_worker
    from workers.orchestration import orchestration_worker

    site, queue = "edge-admission", f"edge-admission-{uuid.uuid4().hex[:6]}"
    settings = stack.settings.model_copy(update={"orchestration_task_queue": queue, "api_port": free_port(),
                                                 "inference_task_queue": f"{queue}-inference",
                                                 "max_batches_in_flight_per_site": 2, "admission_retry_after_s": 2,
                                                 "max_frames_per_batch": 3})
    server = _QuietServer(uvicorn.Config(create_app(settings, temporal_client=temporal_client), host="127.0.0.1",
                                         port=settings.api_port, log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    frames = generated(site, 16)
    agent = EdgeAgent(agent_settings(stack, tmp_path / "edge", site, api_url=settings.resolved_api_url,
                                     batch_max_frames=4, model_ref=""))
    try:
        await until(lambda: server.started, 30, "the second API")
        async with running(agent), httpx.AsyncClient(base_url=agent.local_url, timeout=30) as local:
            for i, data in enumerate(frames):
                assert (await post(local, data, filename=f"adm-{i}.jpg")).status_code == 200
            await until(lambda: Counter(a.outcome for a in agent.uploader.attempts)["429"] >= 2, 60, "two 429 answers")
            attempts = list(agent.uploader.attempts)
            assert (attempts[0].outcome, attempts[0].frames) == ("413", 4), attempts
            assert all(a.frames == 2 for a in attempts[1:]), attempts
            told = [(a, b) for a, b in itertools.pairwise(attempts) if a.outcome == "429"]
            assert told and all(a.wait_s >= 2.0 and b.at - a.at >= 2.0 for a, b in told), attempts
            assert len({a.batch_key for a, _ in told}) == 1  # the same batch, under its own key, each time
            assert len(await stack.accepted(site)) == 4
            async with orchestration_worker(stack.client, stack.pool, stack.store, settings), \
                    inference_worker(stack.client, stack.classifier, stack.pool, settings):
                await until(lambda: agent.status().queue_frames == 0, 90,
                            "the batches to be admitted once the first ones completed")
        assert await stack.accepted(site) == sorted((f"adm-{i}.jpg", sha256_hex(d)) for i, d in enumerate(frames))
    finally:
        server.should_exit = True
        await serving


# ---- the agent as a process ----

class AgentProcess:
    """`python -m edge` with SIGHTLINE_EDGE_* from these settings."""

    def __init__(self, settings: EdgeSettings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.url = settings.local_url
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
        for name, value in settings.model_dump(mode="json").items():
            if value is None:
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"SIGHTLINE_EDGE_{name.upper()}"] = text
        env["SIGHTLINE_EDGE_API_KEY"] = settings.api_key.get_secret_value()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge"], env=self.env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=60, interval=0.1, message="the agent to answer /healthz")

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            body: dict[str, Any] = (await http.get(f"{self.url}/status")).json()
            return body

    async def metrics(self) -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            return (await http.get(f"{self.url}/metrics")).text

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


async def test_an_agent_killed_while_its_answer_is_lost_loses_and_duplicates_nothing(stack: Stack,
                                                                                      tmp_path: Path) -> None:
    site = "edge-killed"
    link = await LinkProxy("127.0.0.1", stack.settings.api_port).start()
    settings = agent_settings(stack, tmp_path / "edge", site, api_url=link.url, listen_port=free_port(),
                              batch_max_frames=6, model_ref="")
    agent = AgentProcess(settings, tmp_path / "agent.log")
    frames = generated(site, 26)
    acked: list[tuple[str, str]] = []

    async def camera(i: int) -> bool:
        """The camera's side: a frame counts as captured when the agent acknowledged it."""
        try:
            async with httpx.AsyncClient(base_url=agent.url, timeout=10) as local:
                answer = await post(local, frames[i], filename=f"k-{i}.jpg")
        except httpx.TransportError:
            return False
        if answer.status_code == 200:
            acked.append((f"k-{i}.jpg", sha256_hex(frames[i])))
        return answer.status_code == 200

    try:
        await asyncio.to_thread(agent.start)
        assert all([await camera(i) for i in range(12)])
        await eventually(lambda: _queue_empty(agent), timeout=60, message="the first frames to go")
        link.hold()  # the API goes on answering; the answers stay in the link
        assert all([await camera(i) for i in range(12, 18)])
        await until(lambda: b'"batch_id"' in link.held, 60, "the API to accept a batch whose answer is lost")
        agent.kill()
        link.release()
        assert not any([await camera(i) for i in (18, 19)])  # no agent: not captured
        await asyncio.to_thread(agent.start)
        assert all([await camera(i) for i in range(20, 26)])
        await eventually(lambda: _queue_empty(agent), timeout=60, message="the queue to drain after the restart")
        assert await stack.accepted(site) == sorted(acked)
        assert len(acked) == 24
        # The batch whose answer was lost went again under its key and was answered with the batch the API had.
        assert metric(await agent.metrics(), 'sightline_edge_batches_uploaded_total{outcome="existing"}') >= 1
    finally:
        agent.ensure_stopped()
        await link.close()


async def _queue_empty(agent: AgentProcess) -> bool:
    status = await agent.status()
    return status["queue_frames"] == 0


async def test_sixty_seconds_without_the_api_at_ten_frames_a_second(stack: Stack, tmp_path: Path) -> None:
    site, camera, fps, cap, outage_s = "edge-outage", "gen-cam", 10.0, 30.0, 60.0
    settings = agent_settings(stack, tmp_path / "edge", site, listen_port=free_port(), camera_id=camera,
                              camera_fps=fps, camera_seed=4, batch_max_frames=16, batch_max_wait_s=1.0,
                              backfill_batch_max_frames=48, rate_frames_per_s=cap, live_window_s=5.0,
                              backoff_max_s=2.0, model_poll_interval_s=2.0,
                              reconcile_interval_s=2.0, shutdown_drain_s=60.0)
    agent = AgentProcess(settings, tmp_path / "agent.log")
    try:
        await asyncio.to_thread(agent.start)

        async def accepted_some() -> bool:
            return len(await stack.accepted(site)) >= 20

        await eventually(accepted_some, timeout=60, message="the camera's first frames to arrive")
        await asyncio.to_thread(stack.api.kill)
        killed = time.monotonic()
        depths = []
        while time.monotonic() - killed < outage_s:  # the outage: the agent is watched, the API stays dead
            depths.append((await agent.status())["queue_frames"])
            await asyncio.sleep(1.0)
        assert depths[-1] >= depths[0] + 0.8 * fps * (outage_s - 2), depths  # frames pile up at the edge
        await asyncio.to_thread(stack.api.start)
        back_at = time.time()
        captured_at_return = (await agent.status())["cameras"][camera]

        async def drained() -> bool:
            status = await agent.status()
            return status["queue_frames"] <= 16 and (status["oldest_frame_age_s"] or 0) < 3

        await eventually(drained, timeout=150, interval=0.5, message="the backlog to drain")
        drained_at = time.time()
        assert agent.terminate(timeout=90) == 0  # capture stops, what is queued goes, the agent exits
    finally:
        agent.ensure_stopped()
    with sqlite3.connect(queue_database(settings)) as db:
        left = db.execute("SELECT count(*) FROM frames").fetchone()[0]
        [captured_text] = db.execute("SELECT value FROM meta WHERE key = ?",
                                     (f"camera:{camera}:next_index",)).fetchone()
    captured = int(captured_text)
    assert left == 0

    # Every frame captured is accepted exactly once: names and contents against the regenerated camera.
    rows = await stack.accepted(site)
    expected = sorted((f"{camera}-{i:08d}.jpg", sha256_hex(f.jpeg()))
                      for i, f in enumerate(generate_frames(camera, captured, seed=4)))
    assert captured >= fps * (outage_s + 10)
    assert rows == expected

    # The backlog drained within the cap: no 10 s window after the return took more than the cap allows
    # (plus the bucket's second and a batch of debt, and a batch for the API's timing), and the drain
    # did use the room it had.
    batches = await stack.batches(site)
    sent = [(b["created_at"].timestamp(), len(b["filenames"])) for b in batches]
    after = [(t, n) for t, n in sent if t >= back_at]
    for start, _ in after:
        in_window = sum(n for t, n in after if start <= t < start + 10)
        assert in_window <= cap * 10 + cap + 2 * 48, (start, in_window)
    backlog = captured_at_return - sum(n for t, n in sent if t < back_at)
    took = drained_at - back_at
    busiest = max(sum(n for t, n in after if start <= t < start + 10) for start, _ in after)
    print(f"\nedge outage: {captured} frames captured, {backlog} waiting when the API returned, drained in "
          f"{took:.1f} s at a cap of {cap:.0f} frames/s with the camera at {fps:.0f}; busiest 10 s after the "
          f"return: {busiest} frames")
    assert took <= backlog / (cap - fps) * 1.5 + 20, (took, backlog)
    # Live first: frames captured after the return were accepted while the outage's backlog still drained.
    index = {name: int(name.rsplit("-", 1)[1].split(".")[0]) for b in batches for name in b["filenames"]}
    live_batches = [b["created_at"] for b in batches if min(index[n] for n in b["filenames"]) >= captured_at_return]
    backlog_batches = [b["created_at"] for b in batches
                       if b["created_at"].timestamp() >= back_at and max(index[n] for n in b["filenames"])
                       < captured_at_return]
    assert live_batches and backlog_batches and min(live_batches) < max(backlog_batches)
