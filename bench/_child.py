"""Run a benchmark stage in a fresh interpreter, so its wall time and peak RSS are its own; the options and the
machine line the row-count benchmarks share."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


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


def rows_arguments(doc: str | None, workdir: Path) -> argparse.Namespace:
    """``--rows`` (repeatable), ``--workdir``, ``--memory-limit`` (every run's DuckDB limit), ``--repeat``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append", help="N (repeatable); default 1000000")
    ap.add_argument("--workdir", type=Path, default=workdir)
    ap.add_argument("--memory-limit", default="2GB", help="DuckDB memory_limit for every run")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each side; the best is reported")
    return ap.parse_args()


def print_machine() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}")
