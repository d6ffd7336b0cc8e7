"""Runs ``alirecon sandbox serve --json`` as a user would, for the tests of what it serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def serving(world_root: Path, start: str) -> Iterator[dict[str, Any]]:
    """The server's printed details while it runs on a frozen clock at ``start``; on leaving, Ctrl-C must stop
    it with exit code 0 (the process is killed if a test fails first)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from alirecon.cli import main; main()", "sandbox", "serve", "--json",
         "--dir", str(world_root), "--speed", "0", "--start", start],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
