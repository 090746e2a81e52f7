"""Real headless Chromium for browser tests: Debian's ``chromium`` driven by Playwright.

Playwright's Python package drives the system browser (``executable_path``);
its own browser downloads (``playwright install``) are never used. Each
launch gets Playwright's fresh temporary profile, and flags that keep the
browser off the network (no QUIC, no background requests, no component
updates, no sync): a test page reaches the rtcs node under test and nothing
else.

Without chromium or the playwright package a test is skipped saying why,
or fails when ``CI`` is set (CI must run the browser tests).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

#: Chromium's flags: headless, no sandbox (containers), and no traffic of its own.
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Milliseconds the browser may take to start.
LAUNCH_TIMEOUT = 20_000


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when ``CI`` is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the browser tests must run", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str:
    """The system chromium's path (skips or fails without one)."""
    found = shutil.which("chromium")
    if found is None:
        unavailable("chromium not installed (apt-get install chromium)")
    return found


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium, closed on exit."""
    path = chromium_path()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=path, args=list(ARGS), timeout=LAUNCH_TIMEOUT
        )
        try:
            yield browser
        finally:
            await browser.close()
