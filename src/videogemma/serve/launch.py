"""`videogemma serve` in a child process, for the load benchmark and the browser test: a free loopback port,
the server started on it, its base URL once `/health` answers, and the process ended afterwards."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_subprocess(log: Path, *options: str, startup_s: float = 120.0) -> Iterator[str]:
    """`videogemma serve OPTIONS` on a free loopback port, its output in `log`; yields its base URL once
    `/health` answers, and ends it on exit. A server that exits or stays silent past `startup_s` is a
    `RuntimeError` holding its log."""
    port = free_port()
    command = [sys.executable, "-m", "videogemma.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as output:
        process = subprocess.Popen([*command, *options], stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while not _healthy(base):
            if process.poll() is not None:
                raise RuntimeError(f"videogemma serve exited ({process.returncode}): {log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"videogemma serve did not answer /health in {startup_s} s: {log.read_text()}"
                )
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
