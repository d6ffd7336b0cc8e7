"""CN-3 to CN-8 on small Alipay China bills written by the same writers the sandbox uses."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from alirecon import pipeline
from alirecon.clock import UTC8
from alirecon.config import ParseConfig, WorkspaceConfig
from alirecon.formats import alipay_cn as cn
from alirecon.recon.checks import CHECKS
from alirecon.warehouse import Workspace

from . import support

ACCT = "20887217759422330156"
DAY = "2026-09-03"
T0 = datetime(2026, 9, 3, 9, 0, tzinfo=UTC8)
EXPORTED = datetime(2026, 9, 4, 6, 6, 47, tzinfo=UTC8)
Row = dict[str, Any]


def trade(i: int, kind: str, amount: int, fee: int, store: str | None, refund_id: str | None = None,
          minutes: int = 0) -> Row:
    at = T0 + timedelta(minutes=i + minutes)
    return {"支付宝交易号": f"2026090322001{i:015d}", "商户订单号": f"ORD{i}", "业务类型": kind, "商品名称": "咖啡",
            "创建时间": at, "完成时间": at, "门店编号": store, "门店名称": store, "订单金额（元）": amount,
            "商家实收（元）": amount, "支付宝红包（元）": 0, "集分宝（元）": 0, "支付宝优惠（元）": 0,
            "商家优惠（元）": 5 if kind == "交易" else 0, "券核销金额（元）": 0, "商家红包消费金额（元）": 0,
            "卡消费金额（元）": 0, "退款批次号/请求号": refund_id, "服务费（元）": fee, "分润（元）": 0}


def trades() -> list[Row]:
    return [trade(1, "交易", 10000, -60, "S1"), trade(2, "交易", 2000, -12, "S2"), trade(3, "交易", 300, -2, None),
            trade(1, "退款", -5000, 30, "S1", "R1", minutes=180)]


def movements(rows: list[Row]) -> list[Row]:
    """What each trade row does to the balance: 商家实收 (在线支付 / 交易退款), then the fee (收费)."""
    out: list[Row] = []
    for r in rows:
        base = {"业务流水号": r["支付宝交易号"], "商户订单号": r["商户订单号"], "发生时间": r["完成时间"],
                "交易渠道": "支付宝"}
        for kind, amount in (("在线支付" if r["业务类型"] == "交易" else "交易退款", r["商家实收（元）"]),
                             ("收费", r["服务费（元）"])):
            out.append({**base, "账务流水号": f"A{len(out):04d}", "业务类型": kind,
                        "收入金额（+元）": max(amount, 0), "支出金额（-元）": min(amount, 0)})
    return out


def bill(*, period: str = DAY, trade_rows: list[Row] | None = None, moves: list[Row] | None = None,
         newest_first: bool = True, edit: Callable[[dict[str, list[Row]]], None] | None = None,
         totals: dict[str, dict[str, dict[str, int]]] | None = None,
         accounts: dict[str, str] | None = None) -> dict[str, bytes]:
    """The four files of one consistent bill; ``edit`` changes the rows of a report after they are derived."""
    t = trade_rows if trade_rows is not None else trades()
    account = cn.account_rows(moves if moves is not None else movements(t), 100000, newest_first=newest_first)
    rows = {"trade_detail": t, "trade_summary": cn.summarise_trades(t), "account_detail": account,
            "account_summary": cn.summarise_account(account)}
    if edit is not None:
        edit(rows)
    return {cn.file_name(report, ACCT, period): cn.write_report(
        report, report_rows, account=(accounts or {}).get(report, ACCT), period=period, exported_at=EXPORTED,
        totals=(totals or {}).get(report)) for report, report_rows in rows.items()}


def checked(tmp_path: Path, files: dict[str, bytes]) -> list[dict[str, Any]]:
    return support.checked(tmp_path, files, "alipay_cn")


def failures(results: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(r["check_id"], r["reason_code"], r["scope"]) for r in results if r["status"] == "fail"}


def by_id(results: list[dict[str, Any]], check_id: str) -> list[dict[str, Any]]:
    return [r for r in results if r["check_id"] == check_id]


def test_checks_are_registered_with_their_spec_sections() -> None:
    assert {f"CN-{i}" for i in range(3, 9)} <= set(CHECKS)
    assert all("alipay-cn.md" in CHECKS[f"CN-{i}"].source for i in range(3, 9))


@pytest.mark.parametrize("period", [DAY, "2026-09"])
def test_a_consistent_bill_passes_every_check(tmp_path: Path, period: str) -> None:
    results = checked(tmp_path, bill(period=period))
    assert failures(results) == set()
    assert {r["check_id"] for r in results if r["status"] == "pass"} == {f"CN-{i}" for i in range(3, 9)}
    [cn5] = by_id(results, "CN-5")
    assert "8 rows, newest first" in cn5["detail"]
    [cn7] = by_id(results, "CN-7")
    assert (cn7["expected"], cn7["actual"]) == (8, 8)  # 4 settlements + 4 fees found as movements


def test_oldest_first_balances(tmp_path: Path) -> None:
    results = checked(tmp_path, bill(newest_first=False))
    [cn5] = by_id(results, "CN-5")
    assert cn5["status"] == "pass" and "oldest first" in cn5["detail"]


def test_footer_that_disagrees_is_a_check_failure_not_a_parse_error(tmp_path: Path) -> None:
    files = bill(totals={"trade_detail": {"PAYMENT": {"settlement": 12301}, "REFUND": {"count": 2}}})
    results = checked(tmp_path, files)  # every file parsed (``checked`` asserts it)
    detail = cn.file_name("trade_detail", ACCT, DAY)
    assert failures(results) == {
        ("CN-3", "FOOTER_SETTLEMENT_MISMATCH", f"{ACCT}/20260903/{detail}/PAYMENT"),
        ("CN-3", "FOOTER_COUNT_MISMATCH", f"{ACCT}/20260903/{detail}/REFUND"),
    }
    [row] = [r for r in by_id(results, "CN-3") if r["reason_code"] == "FOOTER_SETTLEMENT_MISMATCH"
             and r["status"] == "fail"]
    assert (row["expected"], row["actual"], row["currency"]) == (12301, 12300, "CNY")
    # lineage: the footer line (header on line 5, 4 rows, the end marker on line 10) and the file
    assert [(lin["name"], lin["line"]) for lin in row["lineage"]] == [(detail, 11), (detail, None)]


def test_account_footer_counts(tmp_path: Path) -> None:
    results = checked(tmp_path, bill(totals={"account_detail": {"EXPENSE": {"count": 5, "amount": -5074}}}))
    assert failures(results) == {
        ("CN-4", "FOOTER_COUNT_MISMATCH", f"{ACCT}/20260903/{cn.file_name('account_detail', ACCT, DAY)}/EXPENSE")}
    [row] = [r for r in by_id(results, "CN-4") if r["status"] == "fail"]
    assert (row["expected"], row["actual"]) == (5, 4)


def test_a_balance_break_names_its_line(tmp_path: Path) -> None:
    def break_balance(rows: dict[str, list[Row]]) -> None:
        rows["account_detail"][2]["账户余额（元）"] += 1  # file line 8 (newest first)

    results = checked(tmp_path, bill(edit=break_balance))
    name = cn.file_name("account_detail", ACCT, DAY)
    # line 8's balance no longer follows from line 9's; line 7's no longer follows from line 8's
    assert failures(results) == {("CN-5", "BALANCE_BREAK", f"{name}/line 8"),
                                 ("CN-5", "BALANCE_BREAK", f"{name}/line 7")}
    rows = {r["scope"]: r for r in by_id(results, "CN-5")}
    assert rows[f"{name}/line 8"]["actual"] - rows[f"{name}/line 8"]["expected"] == 1
    assert [lin["line"] for lin in rows[f"{name}/line 8"]["lineage"]] == [8, 9]


def test_summary_store_row_that_disagrees(tmp_path: Path) -> None:
    def shift(rows: dict[str, list[Row]]) -> None:
        s1 = next(r for r in rows["trade_summary"] if r["门店编号"] == "S1")
        s1["商家实收（元）"] += 100
        s1["交易订单总笔数"] += 1

    results = checked(tmp_path, bill(edit=shift))
    key = f"{ACCT}/20260903"
    assert failures(results) == {
        ("CN-6", "SUMMARY_DETAIL_MISMATCH", f"{key}/store:S1/settlement"),
        ("CN-6", "SUMMARY_DETAIL_MISMATCH", f"{key}/store:S1/trade_count"),
        ("CN-6", "SUMMARY_TOTAL_INCONSISTENT", f"{key}/TOTAL/settlement"),
        ("CN-6", "SUMMARY_TOTAL_INCONSISTENT", f"{key}/TOTAL/trade_count"),
    }
    row = next(r for r in results if r["scope"] == f"{key}/store:S1/settlement")
    assert (row["expected"], row["actual"]) == (5100, 5000)


def test_summary_missing_a_store_and_account_summary_type(tmp_path: Path) -> None:
    def drop(rows: dict[str, list[Row]]) -> None:
        rows["trade_summary"] = [r for r in rows["trade_summary"] if r["门店编号"] != "S2"]
        rows["account_summary"] = [r for r in rows["account_summary"] if r["类型"] != "收费"]

    results = checked(tmp_path, bill(edit=drop))
    key = f"{ACCT}/20260903"
    fails = failures(results)
    assert ("CN-6", "SUMMARY_GROUP_MISSING", f"{key}/store:S2") in fails
    assert ("CN-6", "SUMMARY_GROUP_MISSING", f"{key}/type:收费") in fails
    assert {f[1] for f in fails} == {"SUMMARY_GROUP_MISSING", "SUMMARY_TOTAL_INCONSISTENT"}


def test_summary_of_another_account(tmp_path: Path) -> None:
    other = "20880000000000000156"
    results = checked(tmp_path, bill(accounts={"trade_summary": other}))
    summary = cn.file_name("trade_summary", ACCT, DAY)
    assert failures(results) == {
        ("CN-6", "SUMMARY_ACCOUNT_MISMATCH", f"{ACCT}/20260903/{cn.file_name('trade_detail', ACCT, DAY)}"),
        ("CN-8", "NAME_ACCOUNT_MISMATCH", summary),
    }


def test_a_fee_that_never_reached_the_account(tmp_path: Path) -> None:
    t = trades()
    moves = [m for m in movements(t) if not (m["业务类型"] == "收费" and m["商户订单号"] == "ORD2")]
    results = checked(tmp_path, bill(trade_rows=t, moves=moves))
    trade_no = t[1]["支付宝交易号"]
    assert failures(results) == {("CN-7", "FEE_MOVEMENT_MISSING", f"{ACCT}/20260903/{trade_no}/fee")}
    [row] = [r for r in by_id(results, "CN-7") if r["status"] == "fail"]
    assert row["expected"] == -12
    assert [(lin["name"], lin["line"]) for lin in row["lineage"]] == [(cn.file_name("trade_detail", ACCT, DAY), 7)]


def test_a_settlement_of_another_amount(tmp_path: Path) -> None:
    t = trades()
    moves = movements(t)
    moves[0]["收入金额（+元）"] -= 1  # 99.99 instead of 100.00
    results = checked(tmp_path, bill(trade_rows=t, moves=moves))
    assert failures(results) == {
        ("CN-7", "SETTLEMENT_MOVEMENT_MISSING", f"{ACCT}/20260903/{t[0]['支付宝交易号']}/settlement")}


def test_account_rows_link_by_merchant_order_without_trade_no(tmp_path: Path) -> None:
    t = trades()
    moves = [{**m, "业务流水号": None} for m in movements(t)]
    results = checked(tmp_path, bill(trade_rows=t, moves=moves))
    assert failures(results) == set()
    assert [r["status"] for r in by_id(results, "CN-7")] == ["pass"]


def test_file_name_date_that_is_not_the_period(tmp_path: Path) -> None:
    data = cn.write_report("trade_detail", trades(), account=ACCT, period=DAY, exported_at=EXPORTED)
    name = cn.file_name("trade_detail", ACCT, "2026-09-02")
    results = checked(tmp_path, {name: data})
    assert failures(results) == {("CN-8", "NAME_PERIOD_MISMATCH", name)}
    row = next(r for r in results if r["reason_code"] == "NAME_PERIOD_MISMATCH")
    assert row["detail"] == "file name '20260902', content '20260903'"


def test_summary_alone_is_a_warning(tmp_path: Path) -> None:
    files = {n: d for n, d in bill().items() if "汇总" in n and "业务" in n}
    results = checked(tmp_path, files)
    assert [(r["check_id"], r["reason_code"], r["status"]) for r in by_id(results, "CN-6")] == [
        ("CN-6", "SUMMARY_WITHOUT_DETAIL", "warn")]


def test_fees_written_unsigned_with_the_by_type_convention(tmp_path: Path) -> None:
    """amount_signs["alipay_cn.trade_detail"] = "by_type": fees written as magnitudes (spec 6.3 #22 gap)."""
    t = trades()
    unsigned = [{**r, "服务费（元）": abs(r["服务费（元）"])} for r in t]
    files = bill(trade_rows=unsigned, moves=movements(t))  # the account bill still moves the signed amounts
    config = WorkspaceConfig(parse=ParseConfig(amount_signs={"alipay_cn.trade_detail": "by_type"}))
    ws = Workspace.init(tmp_path / "ws", config)
    try:
        for name, data in files.items():
            (tmp_path / name).write_bytes(data)
        assert ws.ingest([tmp_path / n for n in files]).ok
        results = [r for r in pipeline.check(ws).results.to_pylist() if r["family"] == "alipay_cn"]
    finally:
        ws.close()
    assert failures(results) == set()
    assert [r["status"] for r in by_id(results, "CN-7")] == ["pass"]


def _as_loaded_before_arrays(ws: Workspace, sha: str) -> None:
    """Rewrite one file's lines as a workspace stored them before extras became arrays: a JSON object of
    header -> text per line, and no extras_names on the file."""
    [(names_json,)] = ws.con.execute("SELECT extras_names FROM files WHERE sha256 = ?", [sha]).fetchall()
    names = json.loads(names_json)
    pairs = ", ".join(f"'{n}', json_extract_string(extras, '$[{i}]')" for i, n in enumerate(names))
    ws.con.execute(f"UPDATE report_lines SET extras = CAST(json_object({pairs}) AS VARCHAR) "
                   "WHERE source_sha256 = ?", [sha])
    ws.con.execute("UPDATE files SET extras_names = NULL WHERE sha256 = ?", [sha])


def test_lines_loaded_before_extras_became_arrays_are_read_the_same(tmp_path: Path) -> None:
    """An old workspace: one day's files keep JSON-object extras, the next day's are arrays. CN-3 (商家优惠),
    CN-4 (收入 / 支出), CN-5 (账户余额 across both days' files in one query) and CN-6 (门店编号) read both."""
    def disagree(rows: dict[str, list[Row]]) -> None:
        rows["account_detail"][2]["账户余额（元）"] += 1
        next(r for r in rows["trade_summary"] if r["门店编号"] == "S1")["商家实收（元）"] += 100

    files = {**bill(edit=disagree, totals={"trade_detail": {"PAYMENT": {"merchant_discount": 16}}}),
             **bill(period="2026-09-04", totals={"account_detail": {"INCOME": {"amount": 1}}})}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with Workspace.init(tmp_path / "ws", WorkspaceConfig()) as ws:
        assert ws.ingest([tmp_path / n for n in files]).ok

        def results() -> list[tuple[Any, ...]]:
            return sorted((r["check_id"], r["reason_code"], r["status"], r["scope"], r["expected"], r["actual"])
                          for r in pipeline.check(ws).results.to_pylist() if r["family"] == "alipay_cn")

        arrays = results()
        old_day = ws.con.execute("SELECT sha256 FROM files WHERE first_name LIKE '%20260903%'").fetchall()
        assert len(old_day) == 4
        for (sha,) in old_day:
            _as_loaded_before_arrays(ws, sha)
        assert results() == arrays
    fails = {(r[0], r[1], r[3].split("/")[-1]) for r in arrays if r[2] == "fail"}
    assert fails == {("CN-3", "FOOTER_MERCHANT_DISCOUNT_MISMATCH", "PAYMENT"), ("CN-5", "BALANCE_BREAK", "line 8"),
                     ("CN-5", "BALANCE_BREAK", "line 7"), ("CN-6", "SUMMARY_DETAIL_MISMATCH", "settlement"),
                     ("CN-6", "SUMMARY_TOTAL_INCONSISTENT", "settlement"), ("CN-4", "FOOTER_AMOUNT_MISMATCH", "INCOME")}
    assert not [r for r in arrays if r[1] == "BALANCE_UNKNOWN"]
