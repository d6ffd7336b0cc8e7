"""The README's configuration example is a valid workspace configuration (docs that cannot rot)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from alirecon.config import WorkspaceConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_config_example_validates() -> None:
    text = README.read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    config = WorkspaceConfig.model_validate(tomllib.loads(block))
    assert config.ledgers[0].columns["merchant_ref_id"] == "order_ref"
    assert config.accounts[0].role == "ACQP"
    assert config.parse.to_options().amount_units == {"antom.settlement_detail": "major"}


def test_readme_quick_start_is_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in start.strip().splitlines()]
    assert commands == ["./dev alirecon demo", "./dev pytest"]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "./dev pytest" in ci.splitlines()
