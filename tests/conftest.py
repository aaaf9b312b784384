"""Shared fixtures; with CI=true a skipped test is a failure (BPF tests must run)."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("CI") == "true" and rep.skipped and call.when in ("setup", "call"):
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI=true (a skip is a failure here): {rep.longrepr}"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root and the real kernel")
