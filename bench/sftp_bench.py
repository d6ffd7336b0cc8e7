"""Benchmark: fetching over SFTP from a real OpenSSH ``sshd`` on loopback (issue 3, item 8).

Starts its own sshd (``alirecon.sandbox.openssh``: private config, host key and authorized key, 127.0.0.1,
a free port, the distribution's ``sftp-server``) serving a generated folder, then measures in the same run:

  large: one random file (default 256 MiB) fetched by alirecon (``fetch_account``: list, download, verify
         size and sha256, archive, record in the manifest; no ingest) and by the OpenSSH client
         (``sftp -b batchfile``, its defaults: 32 KiB requests, 64 in flight) with the cipher alirecon
         negotiated (a fair comparison: OpenSSH's own first choice, chacha20-poly1305, is shown apart);
  small: many small random files (default 1,000 of 4 KiB) fetched by alirecon with its parallel downloads
         (``max_parallel``, default the config's) and one at a time (``max_parallel = 1``).

Each measurement is wall time from start to the last byte on disk (connection set-up included for both
clients), best of ``--repeat`` alternating runs; every run's bytes are checked (sha256 or size). MB = 10^6
bytes. Beside it, the CPU seconds each side used (client: our process or the ``sftp`` + ``ssh`` children;
server: the sshd session and ``sftp-server``, counted once sshd has reaped them), median of the runs: on a
machine where client and server share few cores the wall time cannot fall below (client + server CPU) /
cores, so the CPU lines bound what any client could reach here. Targets (issue 3): alirecon >= 1.2x OpenSSH
sftp on the large file, parallel >= 5x one at a time on the small files. Not a timed test: it prints figures;
the README quotes them with this command.

    ./dev python bench/sftp_bench.py            # needs sshd (apt-get install openssh-server) and root
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import asyncssh

from alirecon.config import AccountConfig, SftpConfig, WorkspaceConfig
from alirecon.fetch import FetchSummary, fetch_account
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


@dataclass(frozen=True)
class Run:
    seconds: float
    client_cpu: float
    server_cpu: float
    loop_cpu: float = 0.0  # CPU of the thread that ran the event loop (alirecon: the main thread)


def best(runs: list[Run]) -> float:
    return min(r.seconds for r in runs)


def cpu(runs: list[Run]) -> tuple[float, float, float]:
    """Median client, server and event-loop-thread CPU seconds of ``runs``."""
    return (statistics.median(r.client_cpu for r in runs), statistics.median(r.server_cpu for r in runs),
            statistics.median(r.loop_cpu for r in runs))


class CipherLog(logging.Handler):
    """Keeps the cipher alirecon's SFTP source reports when it connects (``alirecon.fetch`` debug line)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.ciphers: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("connected to") and record.args:
            self.ciphers.add(str(record.args[-1]))


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


class Bench:
    def __init__(self, work: Path, server: OpenSshServer, key_file: Path, known_hosts: Path) -> None:
        self.work, self.server, self.key_file, self.known_hosts = work, server, key_file, known_hosts
        self.runs = 0
        self.sshd_pid = int((server.workdir / "sshd.pid").read_text().split()[0])
        self.sftp_ciphers: set[str] = set()

    def server_cpu(self) -> float:
        """CPU seconds of the sshd sessions (and their sftp-server) that have ended and been reaped."""
        fields = Path(f"/proc/{self.sshd_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime

    def wait_sessions(self, timeout: float = 10.0) -> None:
        """Until sshd has reaped every session (so its CPU is counted), or ``timeout``."""
        children = Path(f"/proc/{self.sshd_pid}/task/{self.sshd_pid}/children")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and children.exists() and children.read_text().strip():
            time.sleep(0.01)

    def measured(self, fn: Callable[[], float], children: bool) -> Run:
        """``fn``'s seconds with the CPU the client (this process, or its children) and the server used."""
        self.wait_sessions()
        server0, t0, loop0 = self.server_cpu(), os.times(), time.thread_time()
        seconds = fn()
        loop = time.thread_time() - loop0
        self.wait_sessions()
        t1 = os.times()
        client = (t1.children_user - t0.children_user + t1.children_system - t0.children_system if children
                  else t1.user - t0.user + t1.system - t0.system)
        return Run(seconds, client, self.server_cpu() - server0, 0.0 if children else loop)

    def bare_asyncssh(self, remote: Path, size: int, cipher: str) -> Run:
        """A reference, not a fetch: ``remote`` read into memory over one asyncssh connection with alirecon's
        block size and window, discarded (no sha256, no disk, no manifest); seconds. The byte count is checked."""

        async def read() -> int:
            async with asyncssh.connect(self.server.host, self.server.port, username=self.server.user,
                                        client_keys=[str(self.key_file)], known_hosts=str(self.known_hosts),
                                        encryption_algs=[cipher], config=None) as conn, \
                    conn.start_sftp_client() as sftp, sftp.open(str(remote), "rb", block_size=0) as f:
                block = sftp.limits.max_read_len or 16384
                window = asyncio.Semaphore(max(16, min(asyncssh.sftp.MAX_SFTP_READ_LEN // block, 128)))

                async def one(offset: int) -> int:
                    async with window:
                        return len(await f.read(min(block, size - offset), offset))

                return sum(await asyncio.gather(*(one(o) for o in range(0, size, block))))

        def timed() -> float:
            t0 = time.perf_counter()
            got = asyncio.run(read())
            seconds = time.perf_counter() - t0
            if got != size:
                raise SystemExit(f"asyncssh read {got} of {size} bytes")
            return seconds

        return self.measured(timed, children=False)

    def alirecon(self, directory: Path, expected: dict[str, str], **sftp: object) -> Run:
        """One fetch of ``directory`` into a new workspace (its set-up and removal not counted). Every file's
        sha256 is checked."""
        self.runs += 1
        cfg = SftpConfig.model_validate({
            "host": self.server.host, "port": self.server.port, "username": self.server.user,
            "key_file": self.key_file, "known_hosts": self.known_hosts, "directories": [str(directory)],
            "window_days": 0, **sftp})
        account = AccountConfig(name="bench", family="antom", account_id="bench", role="MERCHANT", sftp=cfg)
        root = self.work / f"ws{self.runs}"
        summaries: list[FetchSummary] = []

        def fetch() -> float:
            t0 = time.perf_counter()
            summaries.append(fetch_account(ws, "bench", now=NOW, until=DAY, ingest=False))
            return time.perf_counter() - t0

        with Workspace.init(root, WorkspaceConfig(accounts=[account])) as ws:
            run = self.measured(fetch, children=False)
        got = {Path(f.path).name: f.sha256 for f in summaries[0].files}
        if summaries[0].failed or got != expected:
            raise SystemExit(f"alirecon fetch incomplete: {summaries[0].to_dict()}")
        shutil.rmtree(root)
        return run

    def openssh_sftp(self, remote: Path, size: int, *options: str) -> Run:
        return self.measured(lambda: self._openssh_sftp(remote, size, *options), children=True)

    def _openssh_sftp(self, remote: Path, size: int, *options: str) -> float:
        """``sftp -b batch`` getting ``remote``; seconds. The size of the copy is checked, and the cipher the
        client negotiated (its ``-v`` log) is kept."""
        self.runs += 1
        local = self.work / f"sftp{self.runs}.bin"
        batch = self.work / "batch"
        batch.write_text(f'get "{remote}" "{local}"\n', encoding="utf-8")
        command = ["sftp", "-q", "-F", "/dev/null", "-b", str(batch), "-i", str(self.key_file), "-P",
                   str(self.server.port), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                   "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                   "-o", "StrictHostKeyChecking=yes", "-v", *options, f"{self.server.user}@{self.server.host}"]
        t0 = time.perf_counter()
        done = subprocess.run(command, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t0
        marker = "kex: server->client cipher: "
        self.sftp_ciphers.update(line.split(marker)[1].split()[0] for line in done.stderr.splitlines()
                                 if marker in line)
        if local.stat().st_size != size:
            raise SystemExit(f"sftp copied {local.stat().st_size} of {size} bytes")
        local.unlink()
        return seconds


def alternate(repeat: int, *runs: Callable[[], Run]) -> list[list[Run]]:
    """Each run ``repeat`` times, interleaved, so drift in the machine hits all of them alike."""
    times: list[list[Run]] = [[] for _ in runs]
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
    parser.add_argument("--cipher", default=None, help="the OpenSSH client's cipher (default: the one alirecon "
                        "negotiated)")
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
    cores = os.cpu_count() or 1
    with OpenSshServer(work / "sshd", [key]) as server:
        known_hosts = work / "known_hosts"
        known_hosts.write_text(server.known_hosts_line() + "\n", encoding="ascii")
        bench = Bench(work, server, key_file, known_hosts)
        print(f"# {platform.platform()}, {cores} CPUs, Python {platform.python_version()}, "
              f"asyncssh {asyncssh.__version__}, {openssh_version()}, sftp subsystem {server.sftp_server}")
        print(f"# best of {args.repeat} alternating runs (CPU: median); MB = 10^6 bytes")
        ciphers = CipherLog()
        logging.getLogger("alirecon.fetch").addHandler(ciphers)
        logging.getLogger("alirecon.fetch").setLevel(logging.DEBUG)
        bench.alirecon(large_dir, large)  # warm-up: the file in the page cache, and the cipher alirecon gets
        cipher = args.cipher or min(ciphers.ciphers)
        remote = large_dir / "large.bin"
        ours, theirs, default, bare = alternate(
            args.repeat, lambda: bench.alirecon(large_dir, large),
            lambda: bench.openssh_sftp(remote, large_size, "-o", f"Ciphers={cipher}"),
            lambda: bench.openssh_sftp(remote, large_size),
            lambda: bench.bare_asyncssh(remote, large_size, cipher))
        disk = durable_write_seconds(large_dir / "large.bin", work / "disk.bin")
        a, o, d, r = best(ours), best(theirs), best(default), best(bare)
        print(f"large file {args.large_mib} MiB (cipher: alirecon {', '.join(sorted(ciphers.ciphers))}; "
              f"sftp {', '.join(sorted(bench.sftp_ciphers))}):")
        row = "  {:<32} {:7.1f} MB/s  {:5.2f} s  runs {}  {}"
        print(row.format("alirecon fetch", mbps(large_size, a), a, fmt(ours), fmt_cpu(ours)))
        print(row.format(f"OpenSSH sftp -b, {cipher}", mbps(large_size, o), o, fmt(theirs), fmt_cpu(theirs)))
        print(row.format("OpenSSH sftp -b, its default", mbps(large_size, d), d, fmt(default), fmt_cpu(default)))
        print(row.format("reference: asyncssh read to RAM", mbps(large_size, r), r, fmt(bare), fmt_cpu(bare)))
        print(f"  ratio alirecon / sftp    {o / a:8.2f}x  same cipher (target >= 1.2x); {d / a:.2f}x vs sftp's "
              f"default cipher; the reference (one connection, no sha256, no disk) {o / r:.2f}x")
        print(f"  floors: CPU (client + server) / {cores} cores: alirecon {floor(ours, cores):.2f} s, "
              f"sftp {floor(theirs, cores):.2f} s; alirecon's event-loop thread alone {cpu(ours)[2]:.2f} s; "
              f"the disk's write + fdatasync of {args.large_mib} MiB {disk:.2f} s (sftp does not sync)")
        total = args.small * small_size
        par, one = alternate(args.repeat, lambda: bench.alirecon(small_dir, small, max_parallel=parallel),
                             lambda: bench.alirecon(small_dir, small, max_parallel=1))
        p, s = best(par), best(one)
        print(f"{args.small} small files of {args.small_kib} KiB:")
        row = "  {:<25} {:7.0f} files/s {:6.2f} MB/s  {:5.2f} s  runs {}  {}"
        print(row.format(f"alirecon max_parallel={parallel}", args.small / p, mbps(total, p), p, fmt(par),
                         fmt_cpu(par)))
        print(row.format("alirecon max_parallel=1", args.small / s, mbps(total, s), s, fmt(one), fmt_cpu(one)))
        print(f"  ratio parallel / one     {s / p:8.2f}x  (target >= 5x)")
        least = max(floor(par, cores), cpu(par)[2])
        print(f"  the parallel fetch needs at least {least:.2f} s here (its CPU / {cores} cores, or its event-loop "
              f"thread's {cpu(par)[2]:.2f} s), so overlapping waits can give at most {s / least:.2f}x; and "
              f"max_parallel={parallel} overlaps at most {parallel} transfers, so at most {parallel}x even where "
              "the one-at-a-time fetch only waited")


def durable_write_seconds(source: Path, dest: Path) -> float:
    """Seconds to write ``source``'s bytes to ``dest`` and fdatasync them: the disk's share of a durable fetch."""
    data = source.read_bytes()
    t0 = time.perf_counter()
    with open(dest, "wb", buffering=0) as out:
        out.write(data)
        os.fdatasync(out.fileno())
    seconds = time.perf_counter() - t0
    dest.unlink()
    return seconds


def floor(runs: list[Run], cores: int) -> float:
    """The least wall time the median run's CPU allows on ``cores`` cores."""
    client, server, _ = cpu(runs)
    return (client + server) / cores


def fmt_cpu(runs: list[Run]) -> str:
    client, server, _ = cpu(runs)
    return f"CPU client {client:.2f} s + server {server:.2f} s"


def fmt(runs: list[Run]) -> str:
    return " / ".join(f"{r.seconds:.2f}" for r in runs)


def openssh_version() -> str:
    out = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().split(",")[0]


if __name__ == "__main__":
    sys.exit(main())
