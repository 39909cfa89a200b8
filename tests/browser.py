"""A real headless browser (Debian's chromium) for pages the project serves."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.servers import REPO

ARTIFACTS = REPO / "test-artifacts"
"""Screenshots the browser tests keep (git-ignored), for a person to look at."""


def chromium() -> str:
    exe = next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None
    )
    if exe is None:
        pytest.fail("chromium is not installed: `make test` installs it (Debian package chromium)")
    return exe


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=15000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def render(url: str, screenshot: str, size: str = "1280,1600") -> str:
    """The page's DOM after its scripts ran; a PNG of it goes to test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    png = ARTIFACTS / screenshot
    shot = _run([f"--screenshot={png}", f"--window-size={size}", url])
    assert png.is_file() and png.stat().st_size > 0, shot.stderr[-2000:]
    dom = _run(["--dump-dom", url])
    assert dom.returncode == 0, dom.stderr[-2000:]
    return dom.stdout


def screenshot_path(name: str) -> Path:
    return ARTIFACTS / name
