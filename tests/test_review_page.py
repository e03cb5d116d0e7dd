"""The reviewer page in a real browser (Debian's chromium driven by Playwright) against the real app
served by uvicorn, a Temporal worker and Postgres: sign in, get a task, decide with the keyboard; two
reviewers at once get different tasks; the label row lands in Postgres and the workflow closes."""

from __future__ import annotations

import asyncio
import functools
import os
import uuid

import pytest
import pytest_asyncio
import uvicorn
from temporalio.client import WorkflowExecutionStatus

from infra.postgres_server import free_port
from infra.store import put_frame
from infra.tables.api_keys import create_key
from tests.frames import jpeg_frame
from tests.polling import eventually
from tests.review_support import fetch_one, review_input
from workflows.review_task import ReviewTaskWorkflow
from workflows.review_types import review_workflow_id

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"Debian's chromium is not installed at {CHROMIUM}; `make test` installs it "
           "(apt-get install -y chromium); a downloaded browser is never used",
)


@pytest_asyncio.fixture
async def served(api):
    """The test's app (its lifespan already run by the api fixture) behind a real HTTP port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())

    async def up():
        return server.started

    await eventually(up, timeout=30, message="uvicorn")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest_asyncio.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def sign_in(browser, base: str, raw_key: str):
    context = await browser.new_context(base_url=base)
    page = await context.new_page()
    await page.goto("/review")
    assert page.url.endswith("/review/sign-in")
    await page.fill("#api_key", raw_key)
    await page.click("#sign-in")
    await page.wait_for_url("**/review")
    return page


async def press(page, key: str) -> None:
    """A key press that submits a form: wait for the page it leads to."""
    async with page.expect_navigation():
        await page.keyboard.press(key)


async def next_task_of(page, mine: set[str]) -> str:
    """Press `n` until the page shows one of this test's tasks (the session's queue may hold others)."""
    for _ in range(20):
        await press(page, "n")
        task = page.locator("#task")
        if await task.count():
            review_id = await task.get_attribute("data-review-id")
            if review_id in mine:
                return review_id
    raise AssertionError("the page never offered this test's tasks")


async def test_reviewers_label_frames_with_the_keyboard(api, served, browser):
    batch = f"batch-page-{uuid.uuid4().hex[:6]}"
    mine = set()
    for position in range(2):
        key = await asyncio.to_thread(put_frame, api.store, jpeg_frame(10 + position), "image/jpeg")
        input = review_input(batch, position, object_key=key, priority="urgent")
        review_id = review_workflow_id(input.frame_id, input.reason)
        await api.client.start_workflow(ReviewTaskWorkflow.run, input, id=review_id,
                                        task_queue=api.settings.orchestration_task_queue)
        mine.add(review_id)
    for review_id in mine:
        await eventually(functools.partial(fetch_one, api.pool, "SELECT 1 AS ok FROM review_tasks WHERE review_id = %s",
                                           review_id), message="tasks in the queue")
    async with api.pool.connection() as conn:
        other = await create_key(conn, "second reviewer", "reviewer")

    # A wrong key is refused on the sign-in page.
    context = await browser.new_context(base_url=served)
    page = await context.new_page()
    await page.goto("/review/sign-in")
    await page.fill("#api_key", "sl_nope_nope")
    await page.click("#sign-in")
    assert "not valid" in await page.inner_text(".flash.error")
    await context.close()

    first = await sign_in(browser, served, api.keys["reviewer"])
    second = await sign_in(browser, served, other.raw_key)
    for page in (first, second):  # this test's batch only: the session's database holds other tests' tasks
        await page.goto(f"/review?batch_id={batch}")
        assert batch in await page.inner_text("#scope")
    assert await first.locator("#empty").count() == 1
    first_task = await next_task_of(first, mine)
    second_task = await next_task_of(second, mine - {first_task})
    assert first_task != second_task  # two reviewers at once never get the same task

    # The page shows the frame large, the model's label and confidence, SLA time left.
    assert await first.inner_text("#predicted") == "scratch"
    assert await first.inner_text("#confidence") == "41%"
    assert "left" in await first.inner_text("#sla")
    await first.wait_for_function("document.getElementById('frame').naturalWidth > 0")
    assert await first.evaluate("document.getElementById('frame').naturalWidth") == 96

    # Keys: classes are ok=1, scratch=2, dent=3; u unusable.
    await press(first, "3")
    assert "Saved 'dent'" in await first.inner_text("#flash")
    await press(second, "u")
    assert "Saved 'unusable'" in await second.inner_text("#flash")

    expected = ((first_task, "dent", "test reviewer"), (second_task, "unusable", "second reviewer"))
    for review_id, label, reviewer in expected:
        row = await eventually(
            functools.partial(fetch_one, api.pool, "SELECT * FROM review_labels WHERE review_id = %s", review_id),
            message="the label row")
        assert (row["label"], row["reviewer_name"], row["predicted_label"]) == (label, reviewer, "scratch")
        assert row["is_correction"] is (label == "dent")
        handle = api.client.get_workflow_handle_for(ReviewTaskWorkflow.run, review_id)

        async def closed(handle=handle):
            return (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

        await eventually(closed, message=f"{review_id} closed in Temporal")
        assert (await handle.result()).final_label == label

    # The session cookie is out of the page's scripts' reach, and signing out ends it.
    assert "sightline_review_session" not in await first.evaluate("document.cookie")
    cookies = {c["name"]: c for c in await first.context.cookies()}
    assert cookies["sightline_review_session"]["httpOnly"] and cookies["sightline_review_session"]["sameSite"] == "Lax"
    async with first.expect_navigation():
        await first.click("header form button")
    assert first.url.endswith("/review/sign-in")
    await first.goto("/review")
    assert first.url.endswith("/review/sign-in")
