"""Start the app on a free loopback port and drive it in headless Chromium (Debian's package:
``playwright install`` cannot download a browser here). Shared by the browser tests, the load test
and the screenshot script."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


class ServerError(RuntimeError):
    """The app did not answer its health check in time (the message holds its output)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env: dict | None = None, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` headless on 127.0.0.1; returns the process and its base URL once
    ``/_stcore/health`` answers."""
    port = free_port()
    # The server's log goes to a file: a pipe nobody reads fills up and then blocks the server.
    log = tempfile.NamedTemporaryFile(prefix="tlcore-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    log.close()
    proc.log_path = log.name  # removed by stop()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).read() == b"ok":
                return proc, base
        except OSError:
            time.sleep(0.5)
    proc.kill()
    proc.wait()
    tail = Path(log.name).read_text()[-4000:]
    os.unlink(log.name)
    raise ServerError(f"streamlit did not start: {tail}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM: what a service manager sends on restart
    proc.wait(timeout=60)
    Path(proc.log_path).unlink(missing_ok=True)


def rss_mb(pid: int) -> float:
    """The process's resident memory (Linux /proc), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process ``pid``, or by the whole machine (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    if pid is None:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        return (int(fields[0]) + int(fields[1]) + int(fields[2])) / ticks  # user, nice, system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
