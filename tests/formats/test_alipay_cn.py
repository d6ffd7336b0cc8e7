"""Alipay China bills: literal rows from the spec, round trips through the writers, malformed files."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alirecon import errors
from alirecon.clock import UTC8, Stamp
from alirecon.formats import alipay_cn as cn
from alirecon.formats import registry
from alirecon.formats.engine import ParsedFile, ParseOptions, extras_dict

ACCT = "20887217759422330156"
EXPORTED = datetime(2026, 9, 4, 6, 6, 47, tzinfo=UTC8)
DAY = "2019-09-16"  # the day of the spec's 2019 bill (alipay-cn.md 6.2)
T = datetime(2026, 9, 3, 10, 56, 48, tzinfo=UTC8)
TD_HEADER = ",".join(cn.HEADERS[("trade_detail", "v1")])


@pytest.fixture(autouse=True, params=["one pass", "halves"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with both decoders: bills from ``_HALVES_FROM`` bytes have their table decoded in two
    halves (the second in a child process), falling back to the one pass on anything unusual; 0 forces it."""
    if request.param == "halves":
        monkeypatch.setattr(cn, "_HALVES_FROM", 0)
    return str(request.param)


def parse(tmp_path: Path, data: bytes, name: str | None = None, con: duckdb.DuckDBPyConnection | None = None,
          options: ParseOptions | None = None) -> ParsedFile:
    path = tmp_path / (name or cn.file_name("trade_detail", ACCT, DAY))
    path.write_bytes(data)
    return registry.parse_file(path, con=con, options=options)


def bill(lines: Sequence[str], newline: str = "\r\n") -> bytes:
    return "".join(line + newline for line in lines).encode("gbk")


def frame(table: Sequence[str], *, title: str = "#支付宝业务明细查询", header: str = TD_HEADER,
          start: str = "#" + "-" * 41 + "业务明细列表" + "-" * 40,
          end: str = "#" + "-" * 41 + "业务明细列表结束" + "-" * 36,
          footers: Sequence[str] = ("#交易合计：0笔，商家实收共0.00元，商家优惠共0.00元",
                                    "#退款合计：1笔，商家实收退款共-0.01元，商家优惠退款共0.00元"),
          period: str = "#起始日期：[2019年09月16日 00:00:00]   终止日期：[2019年09月17日 00:00:00]") -> list[str]:
    return [title, "#账号：[20887217759422330156]", period, start, header, *table, end, *footers,
            "#导出时间：[2019年09月17日 06:06:47]"]


# The 2019 refund row of alipay-cn.md 6.2, verbatim (\t = one TAB).
SPEC_REFUND_ROW = ("2019091622001458860515315453\t,service_1568601259302\t,退款\t,下单测试,2019-09-16 10:55:16,"
                   "2019-09-16 10:56:48,alipay_store\t,alipay_store\t,alipay\t,\t,*津水(602***@qq.com)\t,-0.01,-0.01,"
                   "0.00,0.00,0.00,0.00,0.00,,0.00\t,0.00,re_test_1568602607356\t,0.00,0.00,下单测试")


def test_spec_refund_row_parses_to_exact_values(tmp_path: Path) -> None:
    parsed = parse(tmp_path, bill(frame([SPEC_REFUND_ROW])))
    assert parsed.ok, parsed.problems
    assert (parsed.family, parsed.report) == ("alipay_cn", "trade_detail")
    [line] = parsed.lines_arrow().to_pylist()
    assert {k: line[k] for k in ("record_type", "raw_type", "provider_txn_id", "merchant_ref_id", "order_id",
                                 "original_provider_txn_id", "original_merchant_ref_id", "amount_minor",
                                 "amount_currency", "settlement_minor", "fee_minor", "account_id", "line_no")} == {
        "record_type": "REFUND", "raw_type": "退款", "provider_txn_id": "2019091622001458860515315453",
        "merchant_ref_id": "re_test_1568602607356", "order_id": "service_1568601259302",
        "original_provider_txn_id": "2019091622001458860515315453",
        "original_merchant_ref_id": "service_1568601259302", "amount_minor": -1, "amount_currency": "CNY",
        "settlement_minor": -1, "fee_minor": 0, "account_id": ACCT, "line_no": 6}
    assert line["occurred_at"] == datetime(2019, 9, 16, 2, 56, 48, tzinfo=UTC)
    assert line["occurred_offset_min"] == 480
    extras = extras_dict(line["extras"], parsed.extras_names)
    assert extras["门店编号"] == "alipay_store" and extras["对方账户"] == "*津水(602***@qq.com)"
    assert "终端号" not in extras  # a lone TAB is an empty cell
    expected_meta = {"account": ACCT, "period": "daily", "bill_date": "2019-09-16", "name_date": "20190916",
                     "period_start": "2019-09-16 00:00:00", "period_end": "2019-09-17 00:00:00",
                     "exported_at": "2019-09-17 06:06:47"}
    assert {k: parsed.meta.get(k) for k in expected_meta} == expected_meta
    declared = {(d.scope, d.figure): (d.value, d.line_no) for d in parsed.declared}
    assert declared == {("PAYMENT", "count"): (0, 8), ("PAYMENT", "settlement"): (0, 8),
                        ("PAYMENT", "merchant_discount"): (0, 8), ("REFUND", "count"): (1, 9),
                        ("REFUND", "settlement"): (-1, 9), ("REFUND", "merchant_discount"): (0, 9)}


def test_spec_2012_account_row_and_its_end_marker(tmp_path: Path) -> None:
    """The 2012 row of alipay-cn.md 8.2 (12 columns, 40/37 end marker, newest first, LF)."""
    row = ("54632446537371\t,2012122923922029\t,3226563\t,海航机票\t,2012-12-29 21:02:06,陈晶 (kuangzhe@126.com)\t,"
           "2274.00,0.00,14533.03,支付宝,在线支付,")
    lines = ["#支付宝账务明细查询", "#账号：[20885128171009200156]",
             "#起始日期：[2012年12月01日 00:00:00]   终止日期：[2013年01月01日 00:00:00]",
             "#" + "-" * 41 + "账务明细列表" + "-" * 40, ",".join(cn.HEADERS[("account_detail", "v12")]), row,
             "#" + "-" * 40 + "账务明细列表结束" + "-" * 37, "#支出合计：0笔，共0.00元", "#收入合计：1笔，共2274.00元",
             "#导出时间：[2013年01月04日 06:06:47]"]
    parsed = parse(tmp_path, bill(lines, "\n"), name="20885128171009200156_201212_账务明细.csv")
    assert parsed.ok and not parsed.problems, parsed.problems
    assert (parsed.report, parsed.variant) == ("account_detail", "v12")
    assert parsed.meta["period"] == "monthly" and parsed.meta["bill_date"] == "2012-12"
    [line] = parsed.lines_arrow().to_pylist()
    assert (line["record_type"], line["provider_txn_id"], line["merchant_ref_id"], line["amount_minor"]) == (
        "PAYMENT", "2012122923922029", "3226563", 227400)
    assert line["occurred_at"] == datetime(2012, 12, 29, 13, 2, 6, tzinfo=UTC)
    [provider] = cn.provider_rows(parsed)
    assert provider["账户余额（元）"] == 1453303 and provider["对方账号"] == "陈晶 (kuangzhe@126.com)"
    assert provider["备注"] is None
    assert {(d.scope, d.figure): d.value for d in parsed.declared} == {
        ("EXPENSE", "count"): 0, ("EXPENSE", "amount"): 0, ("INCOME", "count"): 1, ("INCOME", "amount"): 227400}


def test_detection_by_title_then_name(tmp_path: Path) -> None:
    data = {r: cn.write_report(r, [], account=ACCT, period=DAY, exported_at=EXPORTED)
            for r in ("trade_detail", "trade_summary", "account_detail", "account_summary")}
    for report, raw in data.items():
        console = tmp_path / f"download_{report}.csv"  # a console name outside the convention
        console.write_bytes(raw)
        assert registry.detect(console).report == report
        named = tmp_path / cn.file_name(report, ACCT, DAY)
        named.write_bytes(raw)
        assert registry.detect(named).report == report
    # the title wins over a name of another report (tie broken by content, never guessed)
    wrong = tmp_path / cn.file_name("account_detail", ACCT, DAY)
    wrong.write_bytes(data["trade_detail"])
    assert registry.detect(wrong).report == "trade_detail"


def test_empty_day_has_zero_footers_and_no_rows(tmp_path: Path) -> None:
    parsed = parse(tmp_path, cn.write_report("trade_detail", [], account=ACCT, period=DAY, exported_at=EXPORTED))
    assert parsed.ok and parsed.row_count == 0
    assert {(d.scope, d.figure): d.value for d in parsed.declared if d.figure == "count"} == {
        ("PAYMENT", "count"): 0, ("REFUND", "count"): 0}


def test_writer_bytes_follow_the_spec(tmp_path: Path) -> None:
    row = {"支付宝交易号": "2019091622001458860515315453", "商户订单号": "service_1568601259302", "业务类型": "退款",
           "商品名称": "下单测试", "创建时间": datetime(2019, 9, 16, 10, 55, 16, tzinfo=UTC8),
           "完成时间": datetime(2019, 9, 16, 10, 56, 48, tzinfo=UTC8), "门店编号": "alipay_store",
           "门店名称": "alipay_store", "操作员": "alipay", "对方账户": "*津水(602***@qq.com)", "订单金额（元）": -1,
           "商家实收（元）": -1, "支付宝红包（元）": 0, "集分宝（元）": 0, "支付宝优惠（元）": 0, "商家优惠（元）": 0,
           "券核销金额（元）": 0, "商家红包消费金额（元）": 0, "卡消费金额（元）": 0,
           "退款批次号/请求号": "re_test_1568602607356", "服务费（元）": 0, "分润（元）": 0, "备注": "下单测试"}
    data = cn.write_report("trade_detail", [row], account=ACCT, period="2019-09-16",
                           exported_at=datetime(2019, 9, 17, 6, 6, 47, tzinfo=UTC8))
    assert data == bill(frame([SPEC_REFUND_ROW]))  # the spec's row and frame, byte for byte (GBK, CRLF)
    lines = data.split(b"\r\n")
    assert len(lines[3].decode("gbk")) == 88 and len(lines[6].decode("gbk")) == 86  # spec 6.1 lines 4 and 7


ALPHABET = "支付宝测试商品门店甲乙丙丁津水博abcXYZ0123456789 _.()*,\"/"
texts = st.text(alphabet=ALPHABET, min_size=1, max_size=10).map(str.strip).filter(bool)
maybe_text = st.one_of(st.none(), texts)
ids = st.integers(0, 10**27).map(lambda n: f"{n:028d}")
refs = st.text(alphabet="abcdefghijkmnpqrstuvwxyz0123456789_", min_size=1, max_size=20)
fen = st.integers(-10**10, 10**10)
stamps = st.datetimes(min_value=datetime(2013, 1, 1), max_value=datetime(2030, 12, 31)).map(
    lambda d: Stamp(d.replace(microsecond=0, tzinfo=UTC8).astimezone(UTC), 480))
periods = st.one_of(st.dates(date(2013, 1, 1), date(2030, 12, 30)).map(date.isoformat),
                    st.dates(date(2013, 1, 1), date(2030, 12, 1)).map(lambda d: d.strftime("%Y-%m")))


@st.composite
def trade_rows(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["交易", "退款"]))
    row: dict[str, Any] = {"支付宝交易号": draw(ids), "商户订单号": draw(refs), "业务类型": kind,
                           "创建时间": draw(stamps), "完成时间": draw(stamps),
                           "退款批次号/请求号": draw(st.none() | refs)}
    for col in ("商品名称", "门店编号", "门店名称", "操作员", "终端号", "对方账户", "券名称", "备注"):
        row[col] = draw(maybe_text)
    for col in cn.HEADERS[("trade_detail", "v1")]:
        if col.endswith("（元）"):
            row[col] = draw(st.none() | fen)
    sign = -1 if kind == "退款" else 1  # spec 6.3 #11-12: negative on refund rows
    row["订单金额（元）"], row["商家实收（元）"] = (sign * draw(st.integers(0, 10**10)) for _ in range(2))
    return row


@st.composite
def account_rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {"账务流水号": draw(refs), "发生时间": draw(stamps), "账户余额（元）": draw(fen),
                           "收入金额（+元）": draw(st.none() | st.integers(0, 10**9)),
                           "支出金额（-元）": draw(st.none() | st.integers(-10**9, 0)),
                           "业务类型": draw(st.sampled_from([*cn.ACCOUNT_TYPES, "转账", "提现"]) | texts)}
    for col in ("业务流水号", "商户订单号", "商品名称", "对方账号", "交易渠道", "备注", "业务描述", "业务账单来源",
                "业务基础订单号", "业务订单号"):
        row[col] = draw(maybe_text)
    return row


def _roundtrip(tmp_path: Path, con: duckdb.DuckDBPyConnection, report: str, rows: list[dict[str, Any]], period: str,
               header: Sequence[str] | None = None, options: ParseOptions | None = None) -> ParsedFile:
    data = cn.write_report(report, rows, account=ACCT, period=period, exported_at=EXPORTED, header=header)
    parsed = parse(tmp_path, data, name=cn.file_name(report, ACCT, period), con=con, options=options)
    assert parsed.ok, parsed.problems
    assert not parsed.problems, parsed.problems
    assert parsed.report == report and parsed.meta["bill_date"] == period
    assert parsed.meta["period"] == ("monthly" if len(period) == 7 else "daily")
    names = header or cn.HEADERS[(report, "v16" if report == "account_detail" else "v1")]
    assert cn.provider_rows(parsed) == [{n: r.get(n) for n in names} for r in rows]
    return parsed


@settings(max_examples=25)
@given(rows=st.lists(trade_rows(), max_size=6), period=periods)
def test_trade_detail_roundtrip(tmp_path: Path, con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]],
                                period: str) -> None:
    with _roundtrip(tmp_path, con, "trade_detail", rows, period) as parsed:
        for kind, scope in (("交易", "PAYMENT"), ("退款", "REFUND")):
            mine = [r for r in rows if r["业务类型"] == kind]
            declared = {d.figure: d.value for d in parsed.declared if d.scope == scope}
            assert declared == {"count": len(mine), "settlement": sum(r["商家实收（元）"] for r in mine),
                                "merchant_discount": sum(r["商家优惠（元）"] or 0 for r in mine)}


@settings(max_examples=20)
@given(rows=st.lists(trade_rows(), max_size=6), period=periods)
def test_trade_summary_roundtrip(tmp_path: Path, con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]],
                                 period: str) -> None:
    summary = cn.summarise_trades(rows)
    with _roundtrip(tmp_path, con, "trade_summary", summary, period) as parsed:
        total = {d.figure: d.value for d in parsed.declared if d.scope == "TOTAL"}
        assert total["trade_count"] == sum(r["业务类型"] == "交易" for r in rows)
        assert total["settlement"] == sum(r["商家实收（元）"] for r in rows)


@settings(max_examples=25)
@given(rows=st.lists(account_rows(), max_size=6), period=periods, shuffle=st.randoms(use_true_random=False),
       generation=st.sampled_from(["v12", "v16"]))
def test_account_detail_roundtrip_any_column_order(tmp_path: Path, con: duckdb.DuckDBPyConnection,
                                                   rows: list[dict[str, Any]], period: str,
                                                   shuffle: random.Random, generation: str) -> None:
    header = list(cn.HEADERS[("account_detail", generation)])
    shuffle.shuffle(header)
    with _roundtrip(tmp_path, con, "account_detail", rows, period, header=header) as parsed:
        assert parsed.variant == generation
        income = [r["收入金额（+元）"] for r in rows if r["收入金额（+元）"]]
        expense = [r["支出金额（-元）"] for r in rows if r["支出金额（-元）"]]
        assert {(d.scope, d.figure): d.value for d in parsed.declared} == {
            ("INCOME", "count"): len(income), ("INCOME", "amount"): sum(income),
            ("EXPENSE", "count"): len(expense), ("EXPENSE", "amount"): sum(expense)}
        amounts = [line["amount_minor"] for line in parsed.lines_arrow().to_pylist()]
        assert amounts == [None if r["收入金额（+元）"] is None and r["支出金额（-元）"] is None
                           else (r["收入金额（+元）"] or 0) + (r["支出金额（-元）"] or 0) for r in rows]


@settings(max_examples=20)
@given(rows=st.lists(account_rows(), max_size=6), period=periods)
def test_account_summary_roundtrip(tmp_path: Path, con: duckdb.DuckDBPyConnection, rows: list[dict[str, Any]],
                                   period: str) -> None:
    summary = cn.summarise_account(rows)
    with _roundtrip(tmp_path, con, "account_summary", summary, period) as parsed:
        total = {d.figure: d.value for d in parsed.declared if d.scope == "TOTAL"}
        assert total["income"] == sum(r["收入金额（+元）"] or 0 for r in rows)
        assert total["expense_count"] == sum(bool(r["支出金额（-元）"]) for r in rows)


def test_crlf_lf_trailing_commas_and_either_end_marker_read_alike(tmp_path: Path) -> None:
    rows = frame([SPEC_REFUND_ROW])
    variants = {
        "crlf": bill(rows),
        "lf": bill(rows, "\n"),
        "excel": bill([line + ",,,," if line.startswith("#") else line for line in rows]),
        "40/37": bill([*rows[:6], "#" + "-" * 40 + "业务明细列表结束" + "-" * 37, *rows[7:]]),
    }
    seen = []
    for label, data in variants.items():
        (tmp_path / label.replace("/", "_")).mkdir()
        parsed = parse(tmp_path / label.replace("/", "_"), data)
        assert parsed.ok and not parsed.problems, (label, parsed.problems)
        seen.append((parsed.lines_arrow().drop_columns(["source_sha256"]).to_pylist(),
                     [(d.scope, d.figure, d.value) for d in parsed.declared], parsed.meta))
    assert all(s == seen[0] for s in seen)


def test_hash_inside_a_cell_does_not_end_the_table(tmp_path: Path) -> None:
    row = SPEC_REFUND_ROW.replace(",下单测试,", ",套餐#1,", 1)
    parsed = parse(tmp_path, bill(frame([row])))
    assert parsed.ok and not parsed.problems, parsed.problems
    assert cn.provider_rows(parsed)[0]["商品名称"] == "套餐#1"


def test_refund_with_a_positive_amount_is_kept_with_a_warning(tmp_path: Path) -> None:
    positive = SPEC_REFUND_ROW.replace(",-0.01,-0.01,", ",0.01,0.01,", 1)
    parsed = parse(tmp_path, bill(frame([SPEC_REFUND_ROW, positive])))
    assert parsed.ok and parsed.row_count == 2
    assert [(p.code, p.severity, p.line) for p in parsed.problems] == [("bad_value", "warning", 7)]


def test_unknown_dash_count_is_a_warning(tmp_path: Path) -> None:
    rows = frame([SPEC_REFUND_ROW], end="#" + "-" * 30 + "业务明细列表结束" + "-" * 30)
    parsed = parse(tmp_path, bill(rows))
    assert parsed.ok
    [p] = parsed.problems
    assert (p.code, p.severity, p.line) == ("bad_section", "warning", 7)


def test_fee_sign_by_type(tmp_path: Path) -> None:
    rows = [{"支付宝交易号": "1", "商户订单号": "o1", "业务类型": "交易", "完成时间": T, "订单金额（元）": 100,
             "商家实收（元）": 100, "服务费（元）": 6},
            {"支付宝交易号": "1", "商户订单号": "o1", "业务类型": "退款", "完成时间": T, "订单金额（元）": -100,
             "商家实收（元）": -100, "服务费（元）": 6, "退款批次号/请求号": "r1"}]
    data = cn.write_report("trade_detail", rows, account=ACCT, period=DAY, exported_at=EXPORTED)
    options = ParseOptions(amount_signs={"alipay_cn.trade_detail": "by_type"})
    parsed = parse(tmp_path, data, options=options)
    assert parsed.ok
    assert [line["fee_minor"] for line in parsed.lines_arrow().to_pylist()] == [-6, 6]
    assert [r["服务费（元）"] for r in cn.provider_rows(parsed)] == [6, 6]
    as_written = parse(tmp_path, data)
    assert [line["fee_minor"] for line in as_written.lines_arrow().to_pylist()] == [6, 6]
    rows[0]["服务费（元）"] = -6  # by_type: the fee is written unsigned, a minus sign is an error
    bad = parse(tmp_path, cn.write_report("trade_detail", rows, account=ACCT, period=DAY, exported_at=EXPORTED),
                options=options)
    assert [(p.code, p.line, p.column) for p in bad.errors] == [("bad_number", 6, "服务费（元）")]
    with pytest.raises(errors.ConfigError):
        parse(tmp_path, data, options=ParseOptions(amount_signs={"alipay_cn.trade_detail": "negative"}))


def test_header_aliases_built_in_and_configured(tmp_path: Path) -> None:
    header = TD_HEADER.replace("订单金额（元）", "订单金额").replace("集分宝（元）", "集分宝抵扣（元）")
    header = header.replace("备注", "memo")
    parsed = parse(tmp_path, bill(frame([SPEC_REFUND_ROW], header=header)),
                   options=ParseOptions(aliases={"alipay_cn.trade_detail": {"备注": ["memo"]}}))
    assert parsed.ok, parsed.problems
    [row] = cn.provider_rows(parsed)
    assert (row["订单金额（元）"], row["集分宝（元）"], row["备注"]) == (-1, 0, "下单测试")


def test_spaces_around_cells_are_trimmed(tmp_path: Path) -> None:
    spaced = ",".join(f" {cell} " if cell else cell for cell in SPEC_REFUND_ROW.split(","))
    parsed = parse(tmp_path, bill(frame([spaced])))
    assert parsed.ok, parsed.problems
    reference = parse(tmp_path, bill(frame([SPEC_REFUND_ROW])))
    assert cn.provider_rows(parsed) == cn.provider_rows(reference)


def test_name_that_disagrees_with_the_content_is_a_warning(tmp_path: Path) -> None:
    data = cn.write_report("trade_detail", [], account=ACCT, period=DAY, exported_at=EXPORTED)
    parsed = parse(tmp_path, data, name=cn.file_name("trade_detail", "20880000000000000156", "2026-09-02"))
    assert parsed.ok
    assert sorted((p.code, p.severity, p.expected) for p in parsed.problems) == [
        ("name_mismatch", "warning", "20260902"), ("name_mismatch", "warning", "20880000000000000156")]


# ---------------------------------------------------------------------------------------------
# Malformed bills: typed errors with file, line and column


def only_error(parsed: ParsedFile) -> errors.FormatError:
    assert not parsed.ok
    assert len(parsed.errors) == 1, parsed.errors
    return parsed.errors[0]


def test_missing_footer_is_a_truncated_file(tmp_path: Path) -> None:
    rows = frame([SPEC_REFUND_ROW])
    parsed = parse(tmp_path, bill(rows[:-2] + rows[-1:]))  # the 退款合计 line is gone
    err = only_error(parsed)
    assert isinstance(err, errors.TruncatedFile)
    assert (err.file, err.line, err.column_index) == ("20887217759422330156_20190916_业务明细.csv", 9, 1)
    assert "退款合计" in err.message


def test_file_cut_before_the_end_marker_is_truncated(tmp_path: Path) -> None:
    rows = frame([SPEC_REFUND_ROW, SPEC_REFUND_ROW])
    parsed = parse(tmp_path, bill(rows[:6]) + SPEC_REFUND_ROW[:40].encode("gbk"))  # cut inside row 2
    kinds = {(p.code, p.line) for p in parsed.errors}
    assert ("truncated_file", 7) in kinds  # no end marker after the last (cut) line
    assert ("wrong_column_count", 7) in kinds


def test_wrong_column_count(tmp_path: Path) -> None:
    short = SPEC_REFUND_ROW.rsplit(",", 1)[0]  # 24 cells
    err = only_error(parse(tmp_path, bill(frame([SPEC_REFUND_ROW, short]))))
    assert isinstance(err, errors.WrongColumnCount)
    assert (err.file, err.line, err.column_index) == ("20887217759422330156_20190916_业务明细.csv", 7, 25)


def test_broken_gbk_byte(tmp_path: Path) -> None:
    marked = SPEC_REFUND_ROW.replace(",下单测试,", ",BROKEN,", 1)
    data = bill(frame([SPEC_REFUND_ROW, marked]))
    broken = data.replace(b"BROKEN", b"\x81\x20BROKEN")  # a lead byte without a valid trail byte
    err = only_error(parse(tmp_path, broken))
    assert isinstance(err, errors.BadEncoding)
    assert (err.file, err.line, err.column_index, err.column) == (
        "20887217759422330156_20190916_业务明细.csv", 7, 4, "商品名称")


def test_three_decimal_amount(tmp_path: Path) -> None:
    row = {"支付宝交易号": "1", "商户订单号": "o1", "业务类型": "交易", "完成时间": T, "订单金额（元）": "0.001",
           "商家实收（元）": 1}
    data = cn.write_report("trade_detail", [row], account=ACCT, period=DAY, exported_at=EXPORTED)
    err = only_error(parse(tmp_path, data))
    assert isinstance(err, errors.TooManyDecimals)
    assert (err.line, err.column, err.column_index, err.found) == (6, "订单金额（元）", 12, "0.001")


def test_three_decimal_footer(tmp_path: Path) -> None:
    rows = frame([SPEC_REFUND_ROW], footers=("#交易合计：0笔，商家实收共0.000元，商家优惠共0.00元",
                                             "#退款合计：1笔，商家实收退款共-0.01元，商家优惠退款共0.00元"))
    err = only_error(parse(tmp_path, bill(rows)))
    assert isinstance(err, errors.TooManyDecimals)
    assert (err.line, err.column_index, err.found) == (8, 1, "0.000")


def test_utf8_file_given_as_gbk_fails_the_anchor_check(tmp_path: Path) -> None:
    data = bill(frame([SPEC_REFUND_ROW])).decode("gbk").encode("utf-8")
    parsed = parse(tmp_path, data)
    assert parsed.report == "trade_detail"  # recognised by its (UTF-8) title
    err = only_error(parsed)
    assert isinstance(err, errors.BadEncoding)
    assert (err.file, err.line, err.column_index) == ("20887217759422330156_20190916_业务明细.csv", 1, 1)
    assert parsed.row_count == 0 and parsed.sha256  # nothing loaded, the bytes still identified


def test_rows_after_the_end_marker(tmp_path: Path) -> None:
    rows = frame([SPEC_REFUND_ROW])
    err = only_error(parse(tmp_path, bill([*rows[:7], SPEC_REFUND_ROW, *rows[7:]])))
    assert isinstance(err, errors.ContentAfterTrailer)
    assert (err.line, err.column_index) == (8, 1)


def test_missing_account_line(tmp_path: Path) -> None:
    rows = frame([SPEC_REFUND_ROW])
    err = only_error(parse(tmp_path, bill([rows[0], *rows[2:]])))
    assert isinstance(err, errors.BadSection)
    assert err.line == 4 and "#账号" in err.message  # reported where the table starts


@pytest.mark.parametrize("report", ["trade_summary", "account_detail", "account_summary"])
def test_other_reports_need_their_end_marker_too(tmp_path: Path, report: str) -> None:
    data = cn.write_report(report, [], account=ACCT, period=DAY, exported_at=EXPORTED)
    lines = data.split(b"\r\n")
    marker = next(i for i, line in enumerate(lines) if "结束".encode("gbk") in line)
    parsed = parse(tmp_path, b"\r\n".join(lines[:marker] + lines[marker + 1:]), name=cn.file_name(report, ACCT, DAY))
    err = only_error(parsed)
    assert isinstance(err, errors.TruncatedFile)
    assert err.line == marker + 1


def test_period_helpers() -> None:
    assert cn.bill_period("2026-09") == (date(2026, 9, 1), date(2026, 10, 1))
    assert cn.bill_period("2026-12") == (date(2026, 12, 1), date(2027, 1, 1))
    assert cn.bill_period("2026-09-30") == (date(2026, 9, 30), date(2026, 10, 1))
    assert cn.file_name("trade_summary", ACCT, "2026-09") == f"{ACCT}_202609_业务明细(汇总).csv"
    assert cn.file_name("account_detail", ACCT, date(2026, 9, 3), part=1) == f"{ACCT}_20260903_账务明细_1.csv"
    rows = cn.account_rows([{"收入金额（+元）": 100}, {"支出金额（-元）": -30}], 1000, newest_first=True)
    assert [r["账户余额（元）"] for r in rows] == [1070, 1100]


def _big_bill(n: int = 3000) -> bytes:
    rows = [{"支付宝交易号": f"2026090322001{i:015d}", "商户订单号": f"ORD{i:012d}",
             "业务类型": "退款" if i % 7 == 6 else "交易", "商品名称": f"商品{i % 13}", "创建时间": T, "完成时间": T,
             "门店名称": "一号店", "订单金额（元）": -i if i % 7 == 6 else i, "商家实收（元）": -i if i % 7 == 6 else i,
             "退款批次号/请求号": f"R{i}" if i % 7 == 6 else None, "服务费（元）": -(i // 100)} for i in range(n)]
    return cn.write_report("trade_detail", rows, account=ACCT, period=DAY, exported_at=EXPORTED)


def _both(tmp_path: Path, data: bytes) -> tuple[cn._BillText, cn._BillText | None]:
    path = tmp_path / "bill.csv"
    path.write_bytes(data)
    one = cn._decode_in_one_pass(path, tmp_path / "one.csv", name="bill.csv", max_line_bytes=1 << 20, problems=[])
    two = cn._decode_in_halves(path, len(data), tmp_path / "two.csv", name="bill.csv", max_line_bytes=1 << 20)
    return one, two


def _same(tmp_path: Path, one: cn._BillText, two: cn._BillText | None) -> None:
    assert two is not None, "the halves decoder fell back on a plain bill"
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert (two.head, two.header_line, two.header_text, two.tail, two.tail_overflow, two.ok) == (
        one.head, one.header_line, one.header_text, one.tail, one.tail_overflow, one.ok)
    assert two.body is not None and one.body is not None
    assert (two.body.size, two.body.newlines, two.body.ends_with_newline) == (
        one.body.size, one.body.newlines, one.body.ends_with_newline)


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_halves_decode_exactly_like_one_pass(tmp_path: Path, newline: str) -> None:
    data = _big_bill()
    if newline == "\n":
        data = data.replace(b"\r\n", b"\n")
    _same(tmp_path, *_both(tmp_path, data))


def test_halves_without_a_child_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cn.sys, "executable", "")  # nothing to start: both halves decode here, one after the other
    _same(tmp_path, *_both(tmp_path, _big_bill()))


def test_halves_with_blank_lines_before_the_footers_and_no_newline_at_the_end(tmp_path: Path) -> None:
    data = _big_bill()
    end = "#-----------------------------------------业务明细列表结束".encode("gbk")
    data = data.replace(end, b"\r\n\r\n" + end).rstrip(b"\r\n")
    _same(tmp_path, *_both(tmp_path, data))


@pytest.mark.parametrize("damage", ["hash line in the second half", "bad byte in the second half",
                                    "bad byte in the first half", "long tail", "no footer"])
def test_halves_fall_back_to_one_pass_on_anything_unusual(tmp_path: Path, damage: str) -> None:
    data = _big_bill()
    lines = data.split(b"\r\n")
    at = {"first": len(lines) // 4, "second": 3 * len(lines) // 4}
    if damage == "hash line in the second half":
        lines.insert(at["second"], b"#note")
    elif damage.startswith("bad byte"):
        k = at[damage.split()[-2]]
        lines[k] = lines[k].replace(b"ORD", b"\x81\x20ORD", 1)
    elif damage == "long tail":
        lines[-1:-1] = [b"#" + b"x" * 1000] * 80
    else:  # cut where the end marker starts
        lines = [*lines[:next(k for k in range(len(lines) - 1, 0, -1) if not lines[k].startswith(b"#")) + 1], b""]
    one, two = _both(tmp_path, b"\r\n".join(lines))
    if damage == "no footer":  # no tail at all is still plain: decoded in halves, the same as one pass
        _same(tmp_path, one, two)
    else:
        assert two is None
