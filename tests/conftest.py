import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

# Every test session gets its own tlcore data dir and an empty torch hub cache, so tests never
# read a developer's caches and never depend on what happens to be downloaded.
_HOME = tempfile.mkdtemp(prefix="tlcore-test-")
# A run leaves ~300 MB of caches there; left behind, a few hundred runs fill a disk.
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["TLCORE_HOME"] = os.path.join(_HOME, "tlcore")
os.environ["TORCH_HOME"] = os.path.join(_HOME, "torch")


@pytest.fixture(scope="session")
def tlcore_home() -> str:
    return os.environ["TLCORE_HOME"]


@pytest.fixture
def gone_owner() -> tuple[str, int, None]:
    """The owner of a run whose process has exited (as after a server restart)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return socket.gethostname(), proc.pid, None
