"""A real OpenSSH ``sshd`` on loopback, started and stopped by us: for the integration test and the benchmark.

Why: the sandbox server is asyncssh, like our client, so a shared misreading of the protocol would pass
unnoticed; one test and the benchmark must talk to the SFTP server most providers actually run (issue 3
items 7-8; reconciliation-practice.md 6, "real OpenSSH on loopback"). Everything the daemon uses is private
to one work folder (config, host key, authorized_keys, pid file, log), it listens on 127.0.0.1 on a free
high port, accepts only public-key logins of the current user, and serves the real file system read-write
(point clients at a folder of your own). It runs in the foreground (``-D``) as our child process, so
stopping it is killing that one process; ``atexit`` does it too if the caller forgets.

On Debian ``sshd`` needs root (privilege separation); ``/run/sshd`` is created when missing, as the
distribution's service unit would.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import asyncssh

from ..errors import AlireconError

__all__ = ["OpenSshServer", "SshdFailed", "find_sftp_server", "find_sshd", "write_key_pair"]

# where distributions put the stand-alone SFTP server (Debian/Ubuntu, Fedora/RHEL, Arch, Alpine/macOS)
SFTP_SERVER_PATHS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server",
                     "/usr/libexec/sftp-server")
PRIVSEP_DIR = Path("/run/sshd")


class SshdFailed(AlireconError):
    """``sshd`` could not be started (the message carries the end of its log)."""


def find_sshd() -> Path | None:
    """The ``sshd`` binary (``PATH``, then /usr/sbin where non-root ``PATH``s do not look), or None."""
    found = shutil.which("sshd") or shutil.which("sshd", path="/usr/sbin:/usr/local/sbin")
    return Path(found).absolute() if found else None


def find_sftp_server() -> str:
    """The distribution's ``sftp-server``, else ``internal-sftp`` (the same code inside sshd)."""
    return next((p for p in SFTP_SERVER_PATHS if os.access(p, os.X_OK)), "internal-sftp")


def write_key_pair(path: Path) -> asyncssh.SSHKey:
    """A new ed25519 key in OpenSSH format at ``path`` (mode 0600, as ssh and sshd demand) and ``path.pub``."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.export_private_key("openssh"))
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key("openssh"))
    return key


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class OpenSshServer:
    """One ``sshd -D`` on ``host`` with its own config in ``workdir``; use as a context manager.

    ``authorized_keys``: OpenSSH public-key lines (or keys) allowed to log in as ``user`` (default: the
    current user). ``sftp_server``: the SFTP subsystem command (default: ``find_sftp_server()``).
    """

    def __init__(self, workdir: Path, authorized_keys: Sequence[str | asyncssh.SSHKey], *, user: str | None = None,
                 sshd: Path | None = None, sftp_server: str | None = None, host: str = "127.0.0.1") -> None:
        found = sshd or find_sshd()
        if found is None:
            raise SshdFailed("sshd is not installed (Debian: apt-get install openssh-server)")
        self.sshd = Path(found).absolute()  # sshd re-executes itself and insists on an absolute path
        self.workdir = Path(workdir).absolute()
        self.user = user or pwd.getpwuid(os.geteuid()).pw_name
        self.sftp_server = sftp_server or find_sftp_server()
        self.host = host
        self.port: int | None = None
        self._keys = [k if isinstance(k, str) else k.export_public_key("openssh").decode("ascii") for k in
                      authorized_keys]
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._proc: subprocess.Popen[bytes] | None = None

    # -- identity --------------------------------------------------------------------------------

    @property
    def host_key_line(self) -> str:
        """``ssh-ed25519 AAAA...``: the daemon's public host key."""
        algorithm, blob = self.host_key.export_public_key("openssh").decode("ascii").split()[:2]
        return f"{algorithm} {blob}"

    @property
    def fingerprint(self) -> str:
        return str(self.host_key.get_fingerprint("sha256"))

    def known_hosts_line(self) -> str:
        """This daemon's known_hosts line: ``[127.0.0.1]:<port> ssh-ed25519 AAAA...``."""
        if self.port is None:
            raise SshdFailed("sshd has not started: no port yet")
        return f"[{self.host}]:{self.port} {self.host_key_line}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "sshd.log"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # -- lifecycle -------------------------------------------------------------------------------

    def _write_files(self, port: int) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        host_key = self.workdir / "ssh_host_ed25519_key"
        with contextlib.suppress(FileNotFoundError):
            host_key.unlink()
        fd = os.open(host_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(self.host_key.export_private_key("openssh"))
        authorized = self.workdir / "authorized_keys"
        authorized.write_text("".join(k.strip() + "\n" for k in self._keys), encoding="ascii")
        authorized.chmod(0o600)
        config = self.workdir / "sshd_config"
        # StrictModes no: the work folder usually sits under /tmp (world-writable), which StrictModes rejects
        config.write_text("\n".join([
            f"ListenAddress {self.host}", f"Port {port}", f"HostKey {host_key}",
            f"PidFile {self.workdir / 'sshd.pid'}", f"AuthorizedKeysFile {authorized}", f"AllowUsers {self.user}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password", "PrintMotd no",
            "X11Forwarding no", "AllowTcpForwarding no", "AllowAgentForwarding no", "PermitTunnel no",
            "UseDNS no", "LogLevel INFO", f"Subsystem sftp {self.sftp_server}",
        ]) + "\n", encoding="ascii")
        return config

    def start(self, timeout: float = 15.0, attempts: int = 5) -> int:
        """Start the daemon on a free port and wait until it greets; return the port.

        A port taken between our probe and sshd's bind is retried on another port.
        """
        if self._proc is not None:
            raise SshdFailed("sshd is already running")
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        for _ in range(attempts):
            port = _free_port(self.host)
            config = self._write_files(port)
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen([str(self.sshd), "-D", "-e", "-f", str(config)],
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            atexit.register(self.stop)
            if self._wait_ready(port, timeout):
                self.port = port
                return port
            self.stop()
            if "Address already in use" not in self.log_tail():
                break
        raise SshdFailed(f"sshd did not start ({self.sshd} -f {self.workdir / 'sshd_config'}):\n{self.log_tail()}")

    def _wait_ready(self, port: int, timeout: float) -> bool:
        """True once the daemon answers with its SSH banner; False when it exited or never answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, port), timeout=1.0) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Kill our daemon (SIGTERM, then SIGKILL) and wait for it. Sessions it forked end with their clients."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> OpenSshServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
