"""Headless Chromium (Debian's `chromium` package) on a page served here, for the
status page's test and its screenshot script: one place holding the flags this machine
needs (no sandbox as root; no background networking, which the closed network refuses)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def browse(url: str, profile: Path, *flags: str, timeout: float = 60.0) -> bytes:
    """Run headless Chromium on `url` with `flags` (e.g. --dump-dom, --screenshot=F) and a
    fresh profile dir under `profile`; its standard output. AssertionError when Chromium
    is missing or fails; the browser and its helpers are killed when it hangs."""
    path = shutil.which("chromium")
    assert path, "chromium is missing: install Debian's chromium package (./dev test does)"
    cmd = [path, *FLAGS, f"--user-data-dir={profile / 'chromium'}", *flags, url]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:  # its own process group: the browser and its helpers
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out
