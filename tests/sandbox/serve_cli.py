"""Runs ``alirecon sandbox serve`` as a user would, for the tests of what it serves."""

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
def _serve(world_root: Path, start: str, speed: float, *options: str) -> Iterator[subprocess.Popen[str]]:
    """The running server; on leaving, Ctrl-C must stop it with exit code 0 (the process is killed if a test fails
    first)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from alirecon.cli import main; main()", "sandbox", "serve", *options,
         "--dir", str(world_root), "--speed", str(speed), "--start", start],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        yield proc
        proc.send_signal(signal.SIGINT)
        code = proc.wait(20)
        assert code == 0, proc.stderr.read() if proc.stderr else code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def serving(world_root: Path, start: str, speed: float = 0) -> Iterator[dict[str, Any]]:
    """The server's printed ``--json`` details while it runs at ``speed`` (default: a frozen clock) from
    ``start``."""
    with _serve(world_root, start, speed, "--json") as proc:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())


@contextmanager
def serving_text(world_root: Path, start: str) -> Iterator[str]:
    """What the server prints for a person (up to its last line, the ``sftp`` command), on a frozen clock."""
    with _serve(world_root, start, 0) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or "(Ctrl-C stops)" not in lines[-1]:
            line = proc.stdout.readline()
            assert line, "the server stopped before printing its details"
            lines.append(line)
        yield "".join(lines)
