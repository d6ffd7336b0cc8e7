"""Shared by the family check tests: ingest a few generated files and run every check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alirecon import pipeline
from alirecon.config import WorkspaceConfig
from alirecon.warehouse import Workspace


def checked(tmp_path: Path, files: dict[str, bytes], family: str) -> list[dict[str, Any]]:
    """The check results of ``family`` over ``files`` (name -> bytes), which must all parse as that family."""
    ws = Workspace.init(tmp_path / "ws", WorkspaceConfig())
    try:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        report = ws.ingest([tmp_path / n for n in files])
        assert report.ok, [p for f in report.files for p in f.problems]
        assert {f.family for f in report.files} == {family}
        return [r for r in pipeline.check(ws).results.to_pylist() if r["family"] == family]
    finally:
        ws.close()
