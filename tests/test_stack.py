"""`sightline up / status / down` on a data dir of its own, with ports of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from infra.postgres_server import free_port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def stack_env():
    data = Path(tempfile.mkdtemp(prefix="sl-stack-"))
    data.chmod(0o755)
    temporal, ui, api, serving = free_port(), free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "SIGHTLINE_DATA_DIR": str(data),
        "SIGHTLINE_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal}",
        "SIGHTLINE_TEMPORAL_UI_URL": f"http://127.0.0.1:{ui}",
        "SIGHTLINE_API_PORT": str(api),
        "SIGHTLINE_SERVING_URL": f"http://127.0.0.1:{serving}",
        # A fresh data dir has no model: serving bootstraps one; the small profile keeps that short.
        "SIGHTLINE_BOOTSTRAP_PROFILE": "tiny",
    }
    env.pop("SIGHTLINE_DATABASE_URL", None)
    yield env
    subprocess.run([sys.executable, "-m", "infra.cli", "down"], env=env, capture_output=True, timeout=120)
    shutil.rmtree(data, ignore_errors=True)


def cli(env, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def pids(env) -> dict[str, int]:
    run = Path(env["SIGHTLINE_DATA_DIR"]) / "run"
    return {p.stem: int(p.read_text()) for p in run.glob("*.pid")}


def test_up_twice_status_and_down(stack_env):
    first = cli(stack_env, "up")
    assert first.returncode == 0, first.stdout + first.stderr
    started = pids(stack_env)
    assert set(started) >= {"temporal", "serving", "worker", "api"}
    assert all(_alive(pid) for pid in started.values())
    assert httpx.get(f"http://127.0.0.1:{stack_env['SIGHTLINE_API_PORT']}/healthz").json() == {"status": "ok"}
    assert httpx.get(stack_env["SIGHTLINE_TEMPORAL_UI_URL"]).status_code == 200
    assert httpx.get(f"{stack_env['SIGHTLINE_SERVING_URL']}/healthz").status_code == 200

    again = cli(stack_env, "up")
    assert again.returncode == 0
    assert pids(stack_env) == started, "a second `up` started something again"

    status = cli(stack_env, "status")
    assert status.returncode == 0
    for part in ("postgres", "temporal", "ray", "serving", "worker", "api"):
        assert part in status.stdout
    assert str(started["api"]) in status.stdout and stack_env["SIGHTLINE_TEMPORAL_ADDRESS"] in status.stdout

    listed = subprocess.run(
        [str(Path(sys.executable).parent / "temporal"), "operator", "search-attribute", "list",
         "--address", stack_env["SIGHTLINE_TEMPORAL_ADDRESS"]], capture_output=True, text=True, timeout=30)
    assert "SightlineCamera" in listed.stdout and "SightlineDefectCount" in listed.stdout

    down = cli(stack_env, "down")
    assert down.returncode == 0
    assert not any(_alive(pid) for pid in started.values())
    assert cli(stack_env, "status").returncode == 3
    assert (Path(stack_env["SIGHTLINE_DATA_DIR"]) / "logs" / "api.log").exists()
