"""The whole pipeline on generated worlds: what alirecon reports must equal the truth file exactly."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest

from alirecon.clock import UTC8
from alirecon.demo import run_demo
from alirecon.warehouse import Workspace


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return run_demo(tmp_path_factory.mktemp("demo"), seed=42, days=7)


def test_findings_equal_the_truth_exactly(demo) -> None:
    assert demo.diff.missed == []
    assert demo.diff.unexpected == []
    truth = demo.truth
    # the world injects every exception class and every check the issue names, so "exact" is not vacuous
    classes = {e["exception_class"] for e in truth["exceptions"]}
    assert classes == {"missing_in_report", "missing_in_ledger", "amount_mismatch", "currency_mismatch",
                       "status_mismatch", "duplicate_in_report", "duplicate_in_ledger", "link_mismatch",
                       "refund_exceeds_payment"}
    checks = {c["check_id"] for c in truth["check_failures"]}
    assert {"AP-I1", "AP-I2", "AP-I3", "AP-D1", "AP-I4", "AP-I5", "AP-D2", "AP-I6", "AP-I8",
            "AN-1", "AN-2", "AN-3", "AN-4", "AN-5", "AN-9"} <= checks
    assert demo.reconcile.exceptions.num_rows == len(truth["exceptions"])
    assert demo.checks.failures == len(truth["check_failures"])


def test_duplicate_delivery_and_truncated_file(demo) -> None:
    """The re-delivered bytes are recognised by sha256; the truncated re-publication is refused at the fetch
    (its structure says it is unfinished), fetched again every morning and never half-loaded."""
    statuses: dict[str, list[Any]] = {}
    for o in demo.ingest.files:
        statuses.setdefault(o.status, []).append(o)
    assert len(statuses["duplicate"]) == len(demo.truth["duplicate_deliveries"]) == 1
    (dup,) = statuses["duplicate"]
    assert "quarantined" not in statuses
    (truncated,) = demo.truth["quarantined"]
    attempts = [f for s in demo.fetches for f in s.files if f.path == "/" + truncated["path"]]
    assert attempts and {f.status for f in attempts} == {"incomplete"}
    assert {f.code for f in attempts} == {truncated["code"]}
    assert len(attempts) >= 2  # offered again on later mornings, while the server still has it
    assert all(o.name != attempts[0].name or o.sha256 != attempts[0].sha256 for o in demo.ingest.files)
    assert dup.sha256 in {o.sha256 for o in statuses["new"]}


def test_every_published_file_was_fetched_once(demo) -> None:
    """Every morning's fetch took only what was new: each provider file downloaded exactly once."""
    import json

    publish = json.loads((demo.root / "world" / "publish.json").read_text(encoding="utf-8"))
    done = [f.path.lstrip("/") for s in demo.fetches if s.source == "sftp" for f in s.files
            if f.status in ("new", "republished")]
    truncated = {q["path"] for q in demo.truth["quarantined"]}
    assert sorted(done) == sorted(p for p in publish if p not in truncated)
    # the Alipay China bills: each bill type of each day once, through the open-platform API
    bills = [f.path for s in demo.fetches if s.source == "openapi" for f in s.files
             if f.status == "new" and f.code == "bill"]  # not the empty days recorded after the world's week
    store = demo.root / "world" / "alipay_cn"
    zips = {(z.parent.name, z.name.removesuffix(".csv.zip")) for z in store.rglob("*.zip")}
    assert len(zips) == 2 * (7 + 1)  # trade and signcustomer, 7 days and the month
    assert sorted(bills) == sorted(f"{kind}/{'-'.join(filter(None, (d[:4], d[4:6], d[6:])))}" for kind, d in zips)


def test_exceptions_carry_lineage_to_file_and_line(demo) -> None:
    for row in demo.reconcile.exceptions.to_pylist():
        lines = row["report_lines"] or []
        rows = row["ledger_rows"] or []
        assert lines or rows, row
        for lin in lines + rows:
            assert len(lin["sha256"]) == 64 and lin["name"] and lin["line"] >= 2, row
        if row["exception_class"] in ("amount_mismatch", "currency_mismatch", "status_mismatch", "link_mismatch"):
            assert lines and rows, row


def test_cycle_boundary_payments_land_in_their_own_day(demo) -> None:
    ws = Workspace.open(demo.root / "workspace")
    try:
        for b in demo.truth["boundaries"]:
            rows = ws.con.execute(
                "SELECT l.occurred_at, coalesce(json_extract_string(f.meta, '$.date'), "
                "json_extract_string(f.meta, '$.bill_date')), l.clearing_batch_id, l.report "
                "FROM report_lines l JOIN files f ON f.sha256 = l.source_sha256 "
                "WHERE l.merchant_ref_id = ? AND l.report IN ('transaction_detail', 'trade_detail') "
                "AND f.status = 'parsed'", [b["merchant_ref_id"]]).fetchall()
            assert rows, b
            day = date.fromisoformat(b["clearing_date"])
            for occurred, file_date, batch, _ in rows:
                assert occurred.astimezone(UTC8).date() == day
                if b["family"] == "antom":
                    assert file_date == day.strftime("%Y%m%d")
                elif b["family"] == "alipay_cn":  # the daily bill of that day and the month's (period lines)
                    assert file_date in (day.isoformat(), f"{day:%Y-%m}")
                else:
                    assert batch.startswith(day.strftime("%Y%m%d"))
        times = sorted(b["occurred_at"][11:] for b in demo.truth["boundaries"])
        assert times[0].startswith("00:00:00") and times[-1].startswith("23:59:59.999")
    finally:
        ws.close()


def test_rerun_is_idempotent(demo) -> None:
    """Ingesting everything again changes nothing, and a new reconcile gives the same rows in the same order."""
    from alirecon import pipeline

    ws = Workspace.open(demo.root / "workspace")
    try:
        before = ws.con.execute("SELECT count(*) FROM report_lines").fetchall()
        files = sorted((demo.root / "world" / "provider").rglob("*.*"))
        again = ws.ingest(files)
        # every file the fetches completed is known; the truncated one, refused at fetch, is quarantined now
        assert len(files) == len([o for o in demo.ingest.files if o.family != "alipay_cn"]) + 1
        assert again.count("new") == 0 and again.count("duplicate") == len(files) - 1
        (bad,) = [o for o in again.files if o.status == "quarantined"]
        assert "truncated_file" in {p.code for p in bad.problems}
        assert ws.con.execute("SELECT count(*) FROM report_lines").fetchall() == before
        pipeline.ingest_ledgers(ws)
        rerun = pipeline.reconcile(ws)
        assert rerun.exceptions.to_pylist() == demo.reconcile.exceptions.to_pylist()
    finally:
        ws.close()


@pytest.mark.parametrize("seed", [7, 2026])
def test_other_worlds_are_exact_too(tmp_path: Path, seed: int) -> None:
    result = run_demo(tmp_path, seed=seed, days=8)
    assert result.diff.exact, result.diff.to_dict()


def test_a_world_too_small_for_every_fault_is_refused_clearly(tmp_path: Path) -> None:
    from alirecon.sandbox.model import WorldSpec
    from alirecon.sandbox.world import build_world

    with pytest.raises(ValueError, match="at least 7 days"):
        build_world(tmp_path / "w", WorldSpec(days=3, payments_per_day=3))
    world = build_world(tmp_path / "quiet", WorldSpec(days=3, payments_per_day=3, inject=False))
    assert world.files and world.truth.exceptions == [] and world.truth.check_failures == []


def test_a_world_without_faults_reconciles_clean(tmp_path: Path) -> None:
    """Negative control: the same pipeline on a world with nothing injected finds nothing at all."""
    from alirecon import pipeline
    from alirecon.demo import world_config
    from alirecon.sandbox.model import WorldSpec
    from alirecon.sandbox.world import build_world

    world = build_world(tmp_path / "world", WorldSpec(seed=3, days=7, inject=False))
    with Workspace.init(tmp_path / "ws", world_config(world)) as ws:
        report = ws.ingest(world.provider_files())
        assert report.ok and report.count("duplicate") == 0
        assert all(x.ok for x in pipeline.ingest_ledgers(ws))
        checks = pipeline.check(ws)
        assert checks.failures == 0 and checks.results.num_rows > 100
        run = pipeline.reconcile(ws)
        assert run.exceptions.num_rows == 0
        assert sum(c["matched"] for c in run.counts.values()) > 300


def test_the_barcode_merchant_ends_known_and_settled_by_the_next_days_files(demo) -> None:
    """Issue 5 "Done when": a day of payments with injected faults, every one final, matched against the next
    day's B1 files fetched over SFTP; what reconcile says about them is what the gateway's records imply."""
    from alirecon.sandbox.world_barcode import PLAN

    day = demo.barcode
    payments = demo.barcode_payments()
    assert {p["fault"] for p in payments} == set(PLAN)
    assert {p["state"] for p in payments} == {"SUCCESS", "CANCELLED", "FAILED", "MANUAL"}
    for p in payments:
        charged = p["merchant_trans_id"] in day.charged
        # listed by both B1 detail files exactly when the gateway kept the money
        assert p["in_files"] == (["transaction_detail", "settlement_detail"] if charged else []), p
        assert p["state"] == PLAN[p["fault"]][2] and (p["state"] == "SUCCESS" or p["reason"]), p
    found = sorted((r["exception_class"], r["reason_code"], r["match_key"])
                   for r in demo.reconcile.exceptions.to_pylist() if r["family"] == "barcode")
    expected = sorted((e["exception_class"], e["reason_code"], e["match_key"])
                      for e in demo.truth["exceptions"] if e["family"] == "barcode")
    manual_charged = next(p["merchant_trans_id"] for p in payments if p["fault"] == "manual_charged")
    assert found == expected == [("status_mismatch", "LEDGER_NOT_SUCCESS", manual_charged)]
    assert demo.reconcile.counts["barcode"]["matched"] == len(payments) - 1
    # the files were published the morning after the payments (on the running server) and fetched then
    fetched = {f.path.lstrip("/"): s.until for s in demo.fetches if s.account.startswith("barcode")
               for f in s.files if f.status == "new"}
    assert sorted(fetched) == sorted(day.files)
    assert {fetched[rel] for rel in day.files} == {at.astimezone(UTC8).date() for at in day.files.values()}
    out = demo.to_dict()["barcode"]
    assert out["by_state"]["MANUAL"] == sorted(p["merchant_trans_id"] for p in payments if p["state"] == "MANUAL")
