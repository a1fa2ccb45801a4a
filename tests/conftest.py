"""Shared fixtures: where the real third-party data lives; CI's rule that nothing skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Set by .ci/run: a test that would skip (e.g. for lack of real data) fails instead.
STRICT = os.environ.get("LATENTMECH_REQUIRE_REAL_DATA") == "1"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of real third-party data (``LATENTMECH_REAL_DATA``); skip when it is not set.

    Under CI (``LATENTMECH_REQUIRE_REAL_DATA=1``) the missing data is a failure, not a skip.
    """
    root = os.environ.get("LATENTMECH_REAL_DATA")
    path = Path(root).resolve() if root else None
    if path is None or not path.is_dir():
        message = f"LATENTMECH_REAL_DATA={root!r} is not a directory: real-data test cannot run"
        if STRICT:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI, turn every skip into a failure so no test can silently not run."""
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (LATENTMECH_REQUIRE_REAL_DATA=1): {report.longrepr}"
