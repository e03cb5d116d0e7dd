"""The fault suite's stack: one per session, on a data dir and ports of its own, started with
`sightline up` and stopped with `sightline down`. Its model is the session's tiny model (trained once
for every serving test), registered before `up`, so serving starts without training; tests/test_stack.py
covers the first start that trains. The kill table is printed at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.stack import LocalStack
from infra.store import store_from_settings
from tests.faults.harness import REPORT, FaultStack, new_data_dir
from vision.publishing import register_trained
from vision.registry import ModelRegistry
from vision.signatures import signer_from_settings
from vision.training import TrainingResult


@pytest.fixture(scope="session")
def fault_stack(trained_model: TrainingResult) -> Iterator[FaultStack]:
    stack = FaultStack(new_data_dir("sl-faults-"))
    try:
        local = LocalStack(stack.settings)
        local.start_postgres()  # what `up` starts first; the model goes in before serving looks for it
        registry = ModelRegistry(local.database_url())
        # Signed with the stack's own key (generated in its data dir), the one its serving trusts.
        version = register_trained(registry, store_from_settings(stack.settings), trained_model,
                                   created_by="fault suite", signer=signer_from_settings(stack.settings))
        registry.set_alias("production", version.version, "fault suite", "the session's tiny model")
        stack.up()
        yield stack
    finally:
        stack.down()


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("fault suite: kills and recovery")
        for line in REPORT:
            terminalreporter.write_line(line)
