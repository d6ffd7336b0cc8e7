"""Run a benchmark stage in a fresh interpreter, so its wall time and peak RSS are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def run_child(code: str, *args: str) -> tuple[dict, float, float]:
    """Run ``code`` with ``args``; return its last-line JSON output, wall seconds and peak RSS (GiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"child failed ({status}):\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), wall, usage.ru_maxrss / 1024 / 1024
