"""The command line: --json shapes, exit codes (0 agree, 1 discrepancies, 2 error), workspace and one-shot modes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from alirecon.cli import app
from alirecon.demo import world_config
from alirecon.formats import antom
from alirecon.sandbox.model import WorldSpec
from alirecon.sandbox.truth import load_truth
from alirecon.sandbox.world import World, build_world

runner = CliRunner()


def run(*args: str) -> tuple[int, Any]:
    result = runner.invoke(app, list(args))
    text = result.stdout
    try:
        return result.exit_code, json.loads(text)
    except json.JSONDecodeError:
        return result.exit_code, text


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), WorldSpec(seed=11, days=7))


def _files(world: World, pattern: str) -> list[Path]:
    return sorted(p for p in world.provider.rglob(pattern) if "partial" not in p.parts and "redelivered" not in p.parts)


def test_parse_json_has_the_documented_keys(world: World) -> None:
    path = _files(world, "settlementItems_*.csv")[0]
    code, out = run("parse", str(path), "--json")
    assert code == 0, out
    assert {"family", "report", "rows", "by_type", "totals", "declared", "problems"} <= set(out)
    assert (out["family"], out["report"], out["problems"]) == ("antom", "settlement_detail", [])
    assert out["rows"] == sum(out["by_type"].values()) > 0
    for ccy, sums in out["totals"].items():
        assert len(ccy) == 3 and all(isinstance(v, int) for v in sums.values())
    # the file's lines agree with a direct parse of the same bytes
    assert set(out["by_type"]) <= {"PAYMENT", "REFUND"}


def test_parse_summary_declares_its_totals(world: World) -> None:
    path = _files(world, "settlementSummary_*.csv")[0]
    code, out = run("parse", str(path), "--json")
    assert code == 0
    ((ccy, figures),) = out["declared"].items()
    assert len(ccy) == 3 and set(figures) == {"settlement", "fee"} and out["declared_count"] >= 1


def test_parse_bad_file_exits_1_with_file_line_column(world: World, tmp_path: Path) -> None:
    src = next(p for p in _files(world, "settlementItems_*.csv") if ",USD," in p.read_text(encoding="utf-8"))
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    assert ",USD," in lines[1]
    lines[1] = lines[1].replace(",USD,", ",XYZ,", 1)
    bad = tmp_path / src.name
    bad.write_text("".join(lines), encoding="utf-8")
    code, out = run("parse", str(bad), "--json")
    assert code == 1
    problem = next(p for p in out["problems"] if p["code"] == "unknown_currency")
    assert (problem["file"], problem["line"]) == (src.name, 2) and problem["column"]


def test_errors_exit_2() -> None:
    code, out = run("parse", "/nonexistent/file.csv", "--json")
    assert code == 2 and out["error"] == "ConfigError"
    code, _ = run("reconcile", "--report", "x.csv")
    assert code == 2
    code, out = run("exceptions", "-w", "/nonexistent-workspace", "--json")
    assert code == 2 and "message" in out


def test_workspace_commands_end_to_end(world: World, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    code, out = run("init", str(ws), "--json")
    assert code == 0 and Path(out["workspace"]) == ws.resolve()
    world_config(world).dump(ws / "alirecon.toml")
    bills = _cn_bills(world, tmp_path / "bills")  # the Alipay China bills, as the API's zips hold them
    code, out = run("ingest", "-w", str(ws), str(world.provider), str(bills), "--json")
    assert code == 1  # the world holds one truncated file: quarantined, others loaded
    total = len(world.files) + len(list(bills.iterdir()))
    assert out["counts"] == {"new": total - 2, "duplicate": 1, "quarantined": 1, "failed": 0}
    code, out = run("ingest", "-w", str(ws), str(world.provider), str(bills), "--json")
    assert out["counts"]["new"] == 0 and out["counts"]["duplicate"] == total
    truth = load_truth(world.root / "truth.json")
    code, out = run("check", "-w", str(ws), "--json")
    assert code == 1 and out["failures"] == len(truth["check_failures"])
    code, out = run("reconcile", "-w", str(ws), "--json")
    assert code == 1 and len(out["exceptions"]) == len(truth["exceptions"])
    code, listed = run("exceptions", "-w", str(ws), "--json", "--class", "amount_mismatch")
    assert code == 1
    assert listed["count"] == sum(1 for e in truth["exceptions"] if e["exception_class"] == "amount_mismatch")
    code, text = run("exceptions", "-w", str(ws))
    assert code == 1 and "Exceptions by class" in text


def _cn_bills(world: World, out: Path) -> Path:
    """Every CSV of the world's Alipay China bill zips, extracted into ``out``."""
    from alirecon.sources.billzip import extract_bill_zip

    out.mkdir()
    for zipped in sorted((world.root / "alipay_cn").rglob("*.zip")):
        for entry in extract_bill_zip(zipped.read_bytes(), zipped.name):
            (out / entry.basename).write_bytes(entry.data)
    return out


def test_one_shot_reconcile(world: World, tmp_path: Path) -> None:
    reports = [str(p) for p in _files(world, "settlementItems_*.csv")]
    ledger = world.root / "ledgers" / "antom_merchant_orders.csv"
    out_file = tmp_path / "exceptions.parquet"
    args = ["reconcile", "--ledger", str(ledger), "--family", "antom", "--refund-sign", "negate_reverse_types",
            "--map", "merchant_ref_id=order_ref", "--map", "record_type=kind", "--map", "amount=amount",
            "--map", "currency=ccy", "--map", "status=state", "--map", "occurred_at=created_at",
            "--map", "original_merchant_ref_id=refund_of", "--type", "sale=PAYMENT", "--type", "refund=REFUND",
            "--status", "paid=SUCCESS", "--status", "failed=FAILED", "--out", str(out_file), "--json"]
    for r in reports:
        args += ["--report", r]
    code, out = run(*args)
    assert code == 1, out
    truth = load_truth(world.root / "truth.json")
    # the csv settlement files and this ledger are the first Antom merchant's (ids carry its last 4 digits)
    expected = [e for e in truth["exceptions"] if e["report"] == "settlement_detail"
                and e["match_key"].split("-")[1] == "0001"]
    assert expected
    assert out["exception_count"] == len(expected) and out["out"] == str(out_file)
    import pyarrow.parquet as pq

    got = sorted((r["exception_class"], r["match_key"]) for r in pq.read_table(out_file).to_pylist())
    assert got == sorted((e["exception_class"], e["match_key"]) for e in expected)


def test_one_shot_with_a_bad_map_is_an_error(world: World) -> None:
    report = _files(world, "settlementItems_*.csv")[0]
    code, out = run("reconcile", "--report", str(report), "--ledger", str(report), "--map", "nonsense", "--json")
    assert code == 2 and "--map" in out["message"]


def test_demo_json_is_exact(tmp_path: Path) -> None:
    code, out = run("demo", "--keep", str(tmp_path / "d"), "--json", "--seed", "5")
    assert code == 0, out
    assert out["truth"]["exact"] and out["truth"]["missed"] == [] and out["truth"]["unexpected"] == []
    assert out["fetched"]["incomplete"] >= 1 and out["files"]["duplicate"] == 1  # truncated file refused at fetch
    assert out["exceptions"]["total"] == out["truth"]["expected_exceptions"]
    shutil.rmtree(tmp_path / "d")


def test_antom_name_helper_round_trips() -> None:
    # the file names the CLI tests pick are the provider's documented ones
    assert antom.REPORTS[1].name_meta(antom.file_name("settlement_detail", currency="USD", batch_id="1")) == {
        "currency": "USD", "batch_id": "1", "seq": "000"}
