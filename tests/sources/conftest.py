"""Fixtures for fetching: a small synthetic world served by the sandbox SFTP server on loopback, on a
frozen simulated clock, and a workspace whose accounts point at it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from alirecon.config import AccountConfig, SftpConfig, WorkspaceConfig
from alirecon.sandbox import sftp_server as sandbox
from alirecon.sandbox.clock import SimClock
from alirecon.sandbox.model import WorldSpec
from alirecon.sandbox.world import ANTOM_MERCHANT, MPP, World, build_world
from alirecon.warehouse import Workspace

PASSWORD_ENV = "ALIRECON_TEST_SFTP_PASSWORD"
PASSWORD = "s3cret-Pa55word-never-logged"
USER = "recon"
ANTOM = "antom-v1"
ALIPAYPLUS = "alipayplus-mpp"


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Three days, few payments, no injected discrepancies: fast, and every file parses."""
    return build_world(tmp_path_factory.mktemp("world"), WorldSpec(days=3, payments_per_day=3, inject=False))


@dataclass
class Served:
    """A running sandbox server and what a client needs to reach it."""

    server: sandbox.SandboxServer
    clock: SimClock
    port: int

    @property
    def faults(self) -> sandbox.Faults:
        return self.server.faults

    @property
    def stats(self) -> sandbox.ServerStats:
        return self.server.stats


def serve(tree: sandbox.ProviderTree, now: datetime, **kwargs: Any) -> Iterator[Served]:
    clock = SimClock(now)
    kwargs.setdefault("users", {USER: PASSWORD})
    server = sandbox.SandboxServer(tree, clock, **kwargs)
    with sandbox.ServerThread(server) as thread:
        assert thread.port is not None
        yield Served(server, clock, thread.port)


@pytest.fixture
def served(small_world: World) -> Iterator[Served]:
    yield from serve(sandbox.ProviderTree.from_world(small_world), sandbox.default_start(small_world.root))


def sftp_config(port: int, **overrides: object) -> SftpConfig:
    data: dict[str, object] = {"host": "127.0.0.1", "port": port, "username": USER, "password_env": PASSWORD_ENV,
                               "timeout": 5.0, "retries": 4, "backoff_initial": 0.01, "backoff_max": 0.05}
    return SftpConfig.model_validate(data | overrides)


def workspace_config(port: int, **overrides: object) -> WorkspaceConfig:
    """The Antom v1 merchant (CSV) and the Alipay+ MPP of the world, both fetched from ``port``."""
    accounts = [
        AccountConfig(name=ANTOM, family="antom", account_id=ANTOM_MERCHANT.account_id, role="MERCHANT",
                      sftp=sftp_config(port, **overrides)),
        AccountConfig(name=ALIPAYPLUS, family="alipayplus", account_id=MPP.account_id, role="MPP",
                      sftp=sftp_config(port, **overrides)),
    ]
    return WorkspaceConfig(accounts=accounts)


def trust(ws_root: Path, served: Served) -> None:
    """Write the server's key to the workspace's known_hosts, as a user who verified it would."""
    (ws_root / "known_hosts").write_text(served.server.known_hosts_line() + "\n", encoding="utf-8")


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    return PASSWORD


@pytest.fixture
def ws(tmp_path: Path, served: Served, password: str) -> Iterator[Workspace]:
    workspace = Workspace.init(tmp_path / "ws", workspace_config(served.port))
    trust(workspace.root, served)
    yield workspace
    workspace.close()


def archive_is_clean(ws: Workspace) -> list[str]:
    """Problems with the archive's object store: an object whose bytes do not match its name, or any file
    there that is not a finished object (a partial file visible to readers)."""
    bad = [f"{sha}: bytes do not match" for sha in ws.archive if not ws.archive.verify(sha)]
    objects = ws.archive.objects
    if objects.is_dir():
        for p in objects.rglob("*"):
            if p.is_file() and (p.name.endswith(".part") or len(p.name) != 64):
                bad.append(f"{p.name}: not a finished object")
    # a put killed earlier left its part in tmp; opening the workspace swept it (its writer is gone)
    bad += [f"{name}: stale part" for name in ws.archive.remove_stale_parts()]
    return bad


def copy_world_file(world: World, rel: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(world.provider / rel, dest)
    return dest


def env_without_password() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
