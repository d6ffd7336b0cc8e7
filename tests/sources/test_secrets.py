"""No password, passphrase or private key material in logs, errors, --json output or the workspace."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncssh
import pytest
from typer.testing import CliRunner

from alirecon.cli import app
from alirecon.errors import ConfigError
from alirecon.fetch import fetch_account
from alirecon.sandbox import sftp_server as sandbox
from alirecon.sandbox.world import World
from alirecon.sources import AuthError
from alirecon.warehouse import Workspace

from .conftest import ANTOM, PASSWORD, PASSWORD_ENV, USER, Served, serve, trust, workspace_config

PASSPHRASE = "passphrase-Zq81-never-shown"


def key_material(private_pem: bytes) -> list[str]:
    """The private key's base64 lines (long enough that a match is not chance)."""
    lines = private_pem.decode().splitlines()
    return [ln for ln in lines if ln and not ln.startswith("-----") and len(ln) >= 40]


def assert_clean(text: str, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in text, f"secret material leaked: {secret[:6]}..."


def workspace_bytes(root: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_password_never_appears(tmp_path: Path, served: Served, password: str,
                                caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ws"
    Workspace.init(root, workspace_config(served.port)).close()
    trust(root, served)
    runner = CliRunner()
    args = ["fetch", "-w", str(root), "--account", ANTOM, "--since", "2026-11-02", "--until", "2026-11-02",
            "--now", served.clock.now().isoformat(), "--json"]
    asyncssh.set_debug_level(2)
    try:
        with caplog.at_level(logging.DEBUG):
            ok = runner.invoke(app, args)
            assert ok.exit_code == 0, ok.stdout
            served.faults.disconnects = [sandbox.Disconnect("*", 10)]  # retries log their reasons
            with Workspace.open(root) as ws:
                ws.con.execute("DELETE FROM remote_files")
            retried = runner.invoke(app, args)
            monkeypatch.setenv(PASSWORD_ENV, PASSWORD + "-wrong")
            refused = runner.invoke(app, args)
    finally:
        asyncssh.set_debug_level(1)
    assert served.stats.disconnects >= 1 and retried.exit_code == 0
    assert refused.exit_code == 2 and "AuthError" in refused.stdout
    assert any(r.name.startswith("asyncssh") for r in caplog.records)  # the logs were really captured
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for text in (logs, ok.stdout, ok.stderr, retried.stdout, retried.stderr, refused.stdout, refused.stderr,
                 workspace_bytes(root)):
        assert_clean(text, [PASSWORD])
    with Workspace.open(root) as ws, pytest.raises(AuthError) as info:
        fetch_account(ws, ANTOM, now=served.clock.now())
    assert_clean(str(info.value) + repr(info.value), [PASSWORD])


def test_key_and_passphrase_never_appear(tmp_path: Path, small_world: World, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    pem = key.export_private_key("pkcs8-pem", passphrase=PASSPHRASE)
    plain = key.export_private_key("pkcs8-pem")  # what the key looks like decrypted
    (tmp_path / "id_test").write_bytes(pem)
    secrets = [PASSPHRASE, *key_material(pem), *key_material(plain)]
    assert len(secrets) > 2
    monkeypatch.setenv("ALIRECON_TEST_PASSPHRASE", PASSPHRASE)
    tree = sandbox.ProviderTree.from_world(small_world)
    for s in serve(tree, sandbox.default_start(small_world.root), users={}, authorized_keys={USER: [key]}):
        cfg = workspace_config(s.port, password_env=None, key_file=str(tmp_path / "id_test"),
                               key_passphrase_env="ALIRECON_TEST_PASSPHRASE")
        with caplog.at_level(logging.DEBUG), Workspace.init(tmp_path / "ws", cfg) as ws:
            trust(ws.root, s)
            summary = fetch_account(ws, ANTOM, now=s.clock.now(), ingest=False)
            assert summary.new > 0
            outputs = [str(summary.to_dict())]
            monkeypatch.setenv("ALIRECON_TEST_PASSPHRASE", "wrong " + PASSPHRASE)
            with pytest.raises(ConfigError) as info:
                fetch_account(ws, ANTOM, now=s.clock.now(), ingest=False)
            outputs.append(str(info.value))
            (tmp_path / "id_other").write_bytes(asyncssh.generate_private_key("ssh-ed25519")
                                                .export_private_key("pkcs8-pem"))
            ws.config.accounts[0].sftp.key_file = tmp_path / "id_other"  # type: ignore[union-attr]
            monkeypatch.setenv("ALIRECON_TEST_PASSPHRASE", PASSPHRASE)
            with pytest.raises(AuthError) as refused:
                fetch_account(ws, ANTOM, now=s.clock.now(), ingest=False)
            outputs.append(str(refused.value))
        outputs.append("\n".join(r.getMessage() for r in caplog.records))
        outputs.append(workspace_bytes(tmp_path / "ws"))
        for text in outputs:
            assert_clean(text, secrets)


def test_a_secret_pasted_into_a_setting_is_not_echoed_by_config_errors(tmp_path: Path) -> None:
    """A password where the variable's name belongs is refused, and the refusal does not repeat it."""
    from alirecon.config import WorkspaceConfig

    bad = {"accounts": [{"name": "a", "family": "antom", "account_id": "1",
                         "sftp": {"host": "127.0.0.1", "username": "u", "password_env": PASSWORD}}]}
    with pytest.raises(ValueError) as refused:
        WorkspaceConfig.model_validate(bad)
    assert "password_env" in str(refused.value)
    assert_clean(str(refused.value), [PASSWORD])
    (tmp_path / "alirecon.toml").write_text(f'[[accounts]]\nname = "a"\nfamily = "antom"\naccount_id = "1"\n'
                                            f'[accounts.sftp]\nhost = "127.0.0.1"\nusername = "u"\n'
                                            f'password_env = "{PASSWORD}"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["status", "--workspace", str(tmp_path), "--json"])
    assert result.exit_code == 2
    assert_clean(result.output, [PASSWORD])
