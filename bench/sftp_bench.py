"""Benchmark: fetching over SFTP from a real OpenSSH ``sshd`` on loopback (issue 3, item 8).

Starts its own sshd (``alirecon.sandbox.openssh``: private config, host key and authorized key, 127.0.0.1,
a free port, the distribution's ``sftp-server``) serving a generated folder, then measures in the same run:

  large: one random file (default 256 MiB) fetched by alirecon (``fetch_account``: list, download, verify
         size and sha256, archive, record in the manifest; no ingest) and by the OpenSSH client
         (``sftp -b batchfile``, its defaults: 32 KiB requests, 64 in flight);
  small: many small random files (default 1,000 of 4 KiB) fetched by alirecon with its parallel downloads
         (``max_parallel``, default the config's) and one at a time (``max_parallel = 1``).

Each measurement is wall time from start to the last byte on disk (connection set-up included for both
clients), best of ``--repeat`` alternating runs; every run's bytes are checked (sha256 or size). MB = 10^6
bytes. Targets (issue 3): alirecon >= 1.2x OpenSSH sftp on the large file, parallel >= 5x one at a time
on the small files. Not a timed test: it prints figures; the README quotes them with this command.

    ./dev python bench/sftp_bench.py            # needs sshd (apt-get install openssh-server) and root
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import asyncssh

from alirecon.config import SftpConfig, WorkspaceConfig
from alirecon.fetch import fetch_account
from alirecon.sandbox.openssh import OpenSshServer, write_key_pair
from alirecon.warehouse import Workspace

DAY = date(2026, 11, 4)
NOW = datetime(2026, 11, 5, 1, tzinfo=UTC)


def write_random(path: Path, size: int) -> str:
    """``size`` random bytes at ``path``; their sha256."""
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, 8 << 20))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def best(times: list[float]) -> float:
    return min(times)


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


class Bench:
    def __init__(self, work: Path, server: OpenSshServer, key_file: Path, known_hosts: Path) -> None:
        self.work, self.server, self.key_file, self.known_hosts = work, server, key_file, known_hosts
        self.runs = 0

    def alirecon(self, directory: Path, expected: dict[str, str], **sftp: object) -> float:
        """One fetch of ``directory`` into a new workspace; seconds. Every file's sha256 is checked."""
        self.runs += 1
        cfg = SftpConfig.model_validate({
            "host": self.server.host, "port": self.server.port, "username": self.server.user,
            "key_file": self.key_file, "known_hosts": self.known_hosts, "directories": [str(directory)],
            "window_days": 0, **sftp})
        from alirecon.config import AccountConfig

        account = AccountConfig(name="bench", family="antom", account_id="bench", role="MERCHANT", sftp=cfg)
        root = self.work / f"ws{self.runs}"
        with Workspace.init(root, WorkspaceConfig(accounts=[account])) as ws:
            t0 = time.perf_counter()
            summary = fetch_account(ws, "bench", now=NOW, until=DAY, ingest=False)
            seconds = time.perf_counter() - t0
        got = {Path(f.path).name: f.sha256 for f in summary.files}
        if summary.failed or got != expected:
            raise SystemExit(f"alirecon fetch incomplete: {summary.to_dict()}")
        shutil.rmtree(root)
        return seconds

    def openssh_sftp(self, remote: Path, size: int, *options: str) -> float:
        """``sftp -b batch`` getting ``remote``; seconds. The size of the copy is checked."""
        self.runs += 1
        local = self.work / f"sftp{self.runs}.bin"
        batch = self.work / "batch"
        batch.write_text(f'get "{remote}" "{local}"\n', encoding="utf-8")
        command = ["sftp", "-q", "-F", "/dev/null", "-b", str(batch), "-i", str(self.key_file), "-P",
                   str(self.server.port), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                   "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                   "-o", "StrictHostKeyChecking=yes", *options, f"{self.server.user}@{self.server.host}"]
        t0 = time.perf_counter()
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        if local.stat().st_size != size:
            raise SystemExit(f"sftp copied {local.stat().st_size} of {size} bytes")
        local.unlink()
        return seconds


def alternate(repeat: int, *runs: Callable[[], float]) -> list[list[float]]:
    """Each run ``repeat`` times, interleaved, so drift in the machine hits all of them alike."""
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeat):
        for i, run in enumerate(runs):
            times[i].append(run())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=1000, help="number of small files")
    parser.add_argument("--small-kib", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=None, help="alirecon max_parallel (default: the config's)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder, removed after")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sftp_bench_", dir=args.workdir))
    try:
        run(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    tree = work / "tree"
    large_dir, small_dir = tree / "large" / DAY.strftime("%Y%m%d"), tree / "small" / DAY.strftime("%Y%m%d")
    large_size = args.large_mib << 20
    large = {"large.bin": write_random(large_dir / "large.bin", large_size)}
    small_size = args.small_kib << 10
    small = {f"s{i:05d}.bin": write_random(small_dir / f"s{i:05d}.bin", small_size) for i in range(args.small)}
    key_file = work / "client" / "id_ed25519"
    key = write_key_pair(key_file)
    parallel = args.parallel or SftpConfig.model_fields["max_parallel"].default
    with OpenSshServer(work / "sshd", [key]) as server:
        known_hosts = work / "known_hosts"
        known_hosts.write_text(server.known_hosts_line() + "\n", encoding="ascii")
        bench = Bench(work, server, key_file, known_hosts)
        print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"asyncssh {asyncssh.__version__}, {openssh_version()}, sftp subsystem {server.sftp_server}")
        print(f"# best of {args.repeat} alternating runs; MB = 10^6 bytes")
        ours, theirs = alternate(args.repeat, lambda: bench.alirecon(large_dir, large),
                                 lambda: bench.openssh_sftp(large_dir / "large.bin", large_size))
        a, o = best(ours), best(theirs)
        print(f"large file {args.large_mib} MiB:")
        print(f"  alirecon fetch           {mbps(large_size, a):8.1f} MB/s  {a:6.2f} s  runs {fmt(ours)}")
        print(f"  OpenSSH sftp -b          {mbps(large_size, o):8.1f} MB/s  {o:6.2f} s  runs {fmt(theirs)}")
        print(f"  ratio alirecon / sftp    {o / a:8.2f}x  (target >= 1.2x)")
        total = args.small * small_size
        par, one = alternate(args.repeat, lambda: bench.alirecon(small_dir, small, max_parallel=parallel),
                             lambda: bench.alirecon(small_dir, small, max_parallel=1))
        p, s = best(par), best(one)
        print(f"{args.small} small files of {args.small_kib} KiB:")
        print(f"  alirecon max_parallel={parallel:<3} {args.small / p:8.0f} files/s {mbps(total, p):6.2f} MB/s  "
              f"{p:6.2f} s  runs {fmt(par)}")
        print(f"  alirecon max_parallel=1   {args.small / s:8.0f} files/s {mbps(total, s):6.2f} MB/s  "
              f"{s:6.2f} s  runs {fmt(one)}")
        print(f"  ratio parallel / one     {s / p:8.2f}x  (target >= 5x)")


def fmt(times: list[float]) -> str:
    return " / ".join(f"{t:.2f}" for t in times)


def openssh_version() -> str:
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().split(",")[0]


if __name__ == "__main__":
    sys.exit(main())
