"""Alipay China bills (alipay-cn.md 4-9): 业务明细, 业务明细(汇总), 账务明细, 账务明细(汇总), daily and monthly.

Why a driver of its own: these files are GBK, which DuckDB cannot read, and wrap the CSV table in ``#`` lines
(title, account, period, markers, footers) that carry facts the checks need. So each file is decoded once as
GB18030 (the GBK superset, spec 5) in large blocks into a UTF-8 copy of its head and table (``#`` lines and line
breaks are kept, so physical line numbers stay exact), the ``#`` lines are read here, and the table goes
through the one engine like every other report: every TAB dropped (the padding of spec 5 / 6.3, removed as
dax-pay does), spaces trimmed from both ends of every cell.

Reports: ``trade_detail`` (业务明细, bill_type=trade), ``trade_summary`` (业务明细(汇总)), ``account_detail``
(账务明细, bill_type=signcustomer; the 12- and 16-column generations and any column order, spec 8.2) and
``account_summary`` (账务明细(汇总)). Daily and monthly bills share the layouts; the period line tells them apart.

Canonical lines (``schema.REPORT_LINE``), all amounts CNY fen (exponent 2; a third decimal is an error):

* 业务明细: record_type PAYMENT (业务类型 交易) / REFUND (退款), other values kept as written with a warning;
  provider_txn_id = 支付宝交易号, order_id = 商户订单号. Like Antom's refunds (own request id in
  ``merchant_ref_id``, the paid order in ``original_*``): a PAYMENT's merchant_ref_id is its 商户订单号, a
  REFUND's is its 退款批次号/请求号 with original_merchant_ref_id = 商户订单号 and original_provider_txn_id =
  支付宝交易号 (on refund rows both are the original trade's, spec 6.3). amount = 订单金额, settlement =
  商家实收 (both as written: negative on refunds, spec 6.3), occurred = 完成时间 (UTC+8), fee = 服务费 with the
  sign convention "negative = charged to the merchant": the written sign is unobserved (spec 6.3 #22, gap 7),
  so ``ParseOptions.amount_signs["alipay_cn.trade_detail"]`` chooses: ``as_written`` (default [inferred]: data
  generators modelled on real files write ``-x.xx``) or ``by_type`` (written unsigned: charged on 交易,
  returned on 退款; a minus sign is then an error). A 退款 row with a positive amount (or a 交易 row with a
  negative one) is kept with a ``bad_value`` warning.
* 账务明细: amount = 收入金额 - |支出金额| (the movement of the balance; 支出 is written negative, spec 8.3,
  the magnitude is taken so a positive spelling cannot flip it [inferred]), provider_txn_id = 业务流水号 (the
  trade_no on trade movements), merchant_ref_id = order_id = 商户订单号, occurred = 发生时间, record_type from
  业务类型 (``ACCOUNT_TYPES`` [inferred, spec 8.3], other values as written).
* 汇总 files: one line per store / type row, record_type STORE / TOTAL (trade) or the mapped 类型 / TOTAL.

Texts the checks read stay in ``extras`` under their header names: 商家优惠, 门店编号 and the other 业务明细
amounts (CN-3, CN-6), 收入/支出/账户余额 (CN-4, CN-5). ``meta["fee_sign"]`` records the fee convention a
业务明细 was read with (CN-6 turns fee_minor back into 服务费 as written).

Declared figures (``schema.DECLARED``): footers of 业务明细, scope PAYMENT / REFUND, figures count, settlement,
merchant_discount (spec 6.1 lines 8-9); of 账务明细, scope INCOME / EXPENSE, figures count, amount (spec 8.1);
汇总 rows, scope ``store:<门店编号>`` / ``type:<类型>`` / TOTAL (合计), figures named in ``SUMMARY_FIGURES``.
Values as written (refund and expense sums negative).

File metadata (``parsed.meta``): account (#账号), period_start / period_end (``yyyy-MM-dd HH:mm:ss``, UTC+8, end
exclusive), period (daily / monthly / other), bill_date (``yyyy-MM-dd`` / ``yyyy-MM``, the API's form),
exported_at; from a name ``<account20>_<date>_<kind>[_<part>].csv`` (spec 4): name_account, name_date, part.
A name that disagrees with the content is a warning here and a CN-8 failure in the checks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import duckdb

from .. import errors
from ..clock import UTC8, Stamp, parse_timestamp
from ..money import MoneyError, format_major, parse_major
from . import gbk_range
from .base import DeclareFn, ReportFormat, Variant, _finish, _header_problems, _layout_for, _raw_csv_table, rows_of
from .engine import (
    Column,
    Declared,
    Kind,
    Layout,
    ParsedFile,
    ParseOptions,
    SourceFile,
    _ident,
    _Scan,
    compile_layout,
    extras_dict,
    read_csv_body,
    resolve_header,
    sort_problems,
    split_csv_line,
)
from .writer import format_cell

__all__ = [
    "ACCOUNT_DETAIL",
    "ACCOUNT_SUMMARY",
    "ACCOUNT_TYPES",
    "CURRENCY",
    "FAMILY",
    "FEE_SIGNS",
    "HEADERS",
    "REPORTS",
    "SUMMARY_FIGURES",
    "TRADE_DETAIL",
    "TRADE_SUMMARY",
    "account_rows",
    "bill_period",
    "fee_sign",
    "file_name",
    "provider_rows",
    "summarise_account",
    "summarise_trades",
    "write_report",
]

FAMILY = "alipay_cn"
CURRENCY = "CNY"
FEE_SIGNS = ("as_written", "by_type")
_TD, _TS, _AD, _AS = "trade_detail", "trade_summary", "account_detail", "account_summary"
HIDDEN = "col:"  # hidden per-column fields of the parse-time body table (summaries only)
_TRIM = " "  # stripped from both ends of every cell (spec 5); TABs are already gone (_Decoder)
_CHUNK = 8 * 1024 * 1024
_MAX_HEAD_LINES = 64  # '#' lines before the column header: a file with more has no header
_MAX_TAIL_BYTES = 64 * 1024  # after the end marker only a few footer lines follow
_HALVES_FROM = 32 * 1024 * 1024  # smaller bills decode in one pass: a child process costs ~20-30 ms to start

# 业务类型 of 账务明细 -> canonical record type; values seen in spec 8.3, the mapping is ours [inferred].
ACCOUNT_TYPES: Mapping[str, str] = {"在线支付": "PAYMENT", "交易付款": "PAYMENT", "交易退款": "REFUND", "收费": "FEE"}
_TRADE_TYPES: Mapping[str, str] = {"交易": "PAYMENT", "退款": "REFUND"}  # spec 6.3 #2 (the only values seen)


# ---------------------------------------------------------------------------------------------
# Columns (spec 6.3, 7, 8.2, 9). Amount headers use full-width parentheses; the bare name and half-width
# parentheses are accepted as aliases (spec 6.3: some parsers accept variants [anecdote]).


def _money(name: str, *, source: str, aliases: tuple[str, ...] = (), **kw: Any) -> Column:
    bare = name.split("（")[0]
    variants = (bare, name.replace("（", "(").replace("）", ")"), *aliases)
    return Column(name, Kind.AMOUNT, currency=("=" + CURRENCY,), unit="major", aliases=variants, source=source, **kw)


def _text(name: str, *, source: str, **kw: Any) -> Column:
    return Column(name, Kind.TEXT, source=source, **kw)


def _time(name: str, *, source: str, **kw: Any) -> Column:
    """``yyyy-MM-dd HH:mm:ss`` without offset: Beijing time (spec 6.3 #4-5)."""
    return Column(name, Kind.TIMESTAMP, source=source, **kw)


_S63 = "alipay-cn.md 6.3"
TRADE_DETAIL_COLUMNS = (
    _text("支付宝交易号", required=True, nonempty=True, source=_S63 + " #0"),
    _text("商户订单号", required=True, source=_S63 + " #1"),
    Column("业务类型", Kind.ENUM, allowed=tuple(_TRADE_TYPES), required=True, nonempty=True, source=_S63 + " #2"),
    _text("商品名称", source=_S63 + " #3"),
    _time("创建时间", source=_S63 + " #4"),
    _time("完成时间", required=True, nonempty=True, source=_S63 + " #5"),
    _text("门店编号", source=_S63 + " #6"),
    _text("门店名称", source=_S63 + " #7"),
    _text("操作员", source=_S63 + " #8"),
    _text("终端号", source=_S63 + " #9"),
    _text("对方账户", source=_S63 + " #10"),
    _money("订单金额（元）", required=True, nonempty=True, source=_S63 + " #11"),
    _money("商家实收（元）", required=True, nonempty=True, source=_S63 + " #12"),
    _money("支付宝红包（元）", source=_S63 + " #13"),
    _money("集分宝（元）", aliases=("集分宝抵扣（元）", "集分宝抵扣"), source=_S63 + " #14"),
    _money("支付宝优惠（元）", source=_S63 + " #15"),
    _money("商家优惠（元）", source=_S63 + " #16"),
    _money("券核销金额（元）", source=_S63 + " #17"),
    _text("券名称", source=_S63 + " #18"),
    _money("商家红包消费金额（元）", source=_S63 + " #19"),
    _money("卡消费金额（元）", source=_S63 + " #20"),
    _text("退款批次号/请求号", source=_S63 + " #21"),
    _money("服务费（元）", source=_S63 + " #22 (sign: gap 7)"),
    _money("分润（元）", source=_S63 + " #23"),
    _text("备注", source=_S63 + " #24"),
)

_S7 = "alipay-cn.md 7 (reconstructed, gap 1)"
TRADE_SUMMARY_COLUMNS = (
    _text("门店编号", required=True, source=_S7),  # 合计 in the totals row
    _text("门店名称", source=_S7),
    Column("交易订单总笔数", Kind.INTEGER, required=True, nonempty=True, nonnegative=True, source=_S7),
    Column("退款订单总笔数", Kind.INTEGER, required=True, nonempty=True, nonnegative=True, source=_S7),
    _money("订单金额（元）", required=True, nonempty=True, source=_S7),
    _money("商家实收（元）", required=True, nonempty=True, source=_S7),
    _money("支付宝优惠（元）", source=_S7),
    _money("商家优惠（元）", source=_S7),
    _money("卡消费金额（元）", source=_S7),
    _money("服务费（元）", source=_S7),
    _money("分润（元）", source=_S7),
    _money("实收净额（元）", source=_S7),
)

_S82 = "alipay-cn.md 8.2"
ACCOUNT_DETAIL_COLUMNS = (
    _text("账务流水号", required=True, nonempty=True, source=_S82),
    _text("业务流水号", source=_S82),
    _text("商户订单号", source=_S82),
    _text("商品名称", source=_S82),
    _time("发生时间", required=True, nonempty=True, source=_S82),
    _text("对方账号", source=_S82),
    # The unused side is 0.00 (2012) or empty (2026) (spec 8.3): not nonempty.
    _money("收入金额（+元）", required=True, nonnegative=True, aliases=("收入金额（元）", "收入金额(元)"), source=_S82),
    _money("支出金额（-元）", required=True, aliases=("支出金额（元）", "支出金额(元)"), source=_S82),
    _money("账户余额（元）", required=True, nonempty=True, source=_S82 + "; 8.3 (balance after the movement)"),
    _text("交易渠道", source=_S82),
    _text("业务类型", source=_S82 + "; 8.3 (values seen)"),
    _text("备注", source=_S82),
    _text("业务描述", source=_S82 + " (16-column generation)"),
    _text("业务账单来源", source=_S82 + " (16-column generation)"),
    _text("业务基础订单号", source=_S82 + " (16-column generation)"),
    _text("业务订单号", source=_S82 + " (16-column generation)"),
)

_S9 = "alipay-cn.md 9 (reconstructed, gap 1)"
ACCOUNT_SUMMARY_COLUMNS = (
    _text("类型", required=True, nonempty=True, source=_S9),  # 合计 in the totals row
    Column("收入笔数", Kind.INTEGER, required=True, nonempty=True, nonnegative=True, source=_S9),
    _money("收入金额（+元）", required=True, nonempty=True, nonnegative=True, source=_S9),
    Column("支出笔数", Kind.INTEGER, required=True, nonempty=True, nonnegative=True, source=_S9),
    _money("支出金额（-元）", required=True, nonempty=True, source=_S9),
    _money("总金额（元）", source=_S9),
)

HEADERS: dict[tuple[str, str], tuple[str, ...]] = {
    (_TD, "v1"): tuple(c.name for c in TRADE_DETAIL_COLUMNS),
    (_TS, "v1"): tuple(c.name for c in TRADE_SUMMARY_COLUMNS),
    (_AD, "v12"): tuple(c.name for c in ACCOUNT_DETAIL_COLUMNS[:12]),
    (_AD, "v16"): tuple(c.name for c in ACCOUNT_DETAIL_COLUMNS),
    (_AS, "v1"): tuple(c.name for c in ACCOUNT_SUMMARY_COLUMNS),
}

# Cells written with a trailing TAB: spec 6.3 (业务明细) and 8.3 (the 2012 账务明细; the two 16-column ids
# likewise [inferred]); none in the 汇总 files (no verbatim file, spec gap 1).
_PADDED: dict[str, frozenset[str]] = {
    _TD: frozenset({"支付宝交易号", "商户订单号", "业务类型", "门店编号", "门店名称", "操作员", "终端号", "对方账户",
                    "商家红包消费金额（元）", "退款批次号/请求号"}),
    _TS: frozenset(),
    _AD: frozenset({"账务流水号", "业务流水号", "商户订单号", "商品名称", "对方账号", "业务基础订单号", "业务订单号"}),
    _AS: frozenset(),
}

# 汇总 columns -> declared figure names (and the 业务明细 / 账务明细 columns CN-6 sums for them).
SUMMARY_FIGURES: dict[str, dict[str, str]] = {
    _TS: {"交易订单总笔数": "trade_count", "退款订单总笔数": "refund_count", "订单金额（元）": "amount",
          "商家实收（元）": "settlement", "支付宝优惠（元）": "alipay_discount", "商家优惠（元）": "merchant_discount",
          "卡消费金额（元）": "card", "服务费（元）": "fee", "分润（元）": "royalty", "实收净额（元）": "net"},
    _AS: {"收入笔数": "income_count", "收入金额（+元）": "income", "支出笔数": "expense_count",
          "支出金额（-元）": "expense", "总金额（元）": "total"},
}


# ---------------------------------------------------------------------------------------------
# Layouts


def _case(column: str, mapping: Mapping[str, str]) -> str:
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items())
    return f"CASE {{{column}}} {whens} ELSE {{{column}}} END"


def _trade_detail_layout(sign: str) -> Layout:
    refund = "({业务类型} = '退款')"
    fee = "{服务费（元）}"
    outputs = {
        "record_type": _case("业务类型", _TRADE_TYPES),
        "raw_type": "{业务类型:raw}",
        "account_id": "{@account}",
        "provider_txn_id": "{支付宝交易号}",
        "order_id": "{商户订单号}",
        "merchant_ref_id": f"CASE WHEN {refund} THEN {{退款批次号/请求号}} ELSE {{商户订单号}} END",
        "original_merchant_ref_id": f"CASE WHEN {refund} THEN {{商户订单号}} END",
        "original_provider_txn_id": f"CASE WHEN {refund} THEN {{支付宝交易号}} END",
        "amount_minor": "{订单金额（元）}",
        "amount_currency": f"'{CURRENCY}'",
        "settlement_minor": "{商家实收（元）}",
        "settlement_currency": f"'{CURRENCY}'",
        # negative = charged to the merchant (module docstring); by_type: unsigned, returned on refunds
        "fee_minor": fee if sign == "as_written" else f"CASE WHEN {refund} THEN {fee} ELSE -({fee}) END",
        "fee_currency": f"CASE WHEN {fee} IS NOT NULL THEN '{CURRENCY}' END",
        "occurred_at": "{完成时间}",
        "occurred_offset_min": "{完成时间:offset}",
    }
    columns: tuple[Column, ...] = TRADE_DETAIL_COLUMNS
    if sign == "by_type":
        columns = tuple(replace(c, nonnegative=True) if c.name == "服务费（元）" else c for c in columns)
    # 退款批次号 also keeps its text: on a 交易 row it has no canonical field (spec 6.3 #21: a lone TAB there).
    return Layout(f"{FAMILY}.{_TD}.{sign}", columns, outputs, extras_keep=("退款批次号/请求号",))


def _account_detail_layout() -> Layout:
    income, expense = "{收入金额（+元）}", "{支出金额（-元）}"
    outputs = {
        "record_type": _case("业务类型", ACCOUNT_TYPES),
        "raw_type": "{业务类型:raw}",
        "account_id": "{@account}",
        "provider_txn_id": "{业务流水号}",
        "merchant_ref_id": "{商户订单号}",
        "order_id": "{商户订单号}",
        "amount_minor": f"CASE WHEN {income} IS NOT NULL OR {expense} IS NOT NULL "
                        f"THEN coalesce({income}, 0) - abs(coalesce({expense}, 0)) END",
        "amount_currency": f"'{CURRENCY}'",
        "occurred_at": "{发生时间}",
        "occurred_offset_min": "{发生时间:offset}",
    }
    keep = ("收入金额（+元）", "支出金额（-元）")  # CN-4 counts and sums them as written
    return Layout(f"{FAMILY}.{_AD}", ACCOUNT_DETAIL_COLUMNS, outputs, extras_keep=keep)


def _hidden(columns: Sequence[Column]) -> dict[str, str]:
    return {HIDDEN + c.name: f"{{{c.name}}}" for c in columns}


def _trade_summary_layout() -> Layout:
    outputs = {
        "record_type": "CASE WHEN {门店编号} = '合计' THEN 'TOTAL' ELSE 'STORE' END",
        "account_id": "{@account}",
        "amount_minor": "{订单金额（元）}",
        "amount_currency": f"'{CURRENCY}'",
        "settlement_minor": "{商家实收（元）}",
        "settlement_currency": f"'{CURRENCY}'",
        "fee_minor": "{服务费（元）}",
        "fee_currency": f"CASE WHEN {{服务费（元）}} IS NOT NULL THEN '{CURRENCY}' END",
        **_hidden(TRADE_SUMMARY_COLUMNS),
    }
    return Layout(f"{FAMILY}.{_TS}", TRADE_SUMMARY_COLUMNS, outputs)


def _account_summary_layout() -> Layout:
    outputs = {
        "record_type": _case("类型", {"合计": "TOTAL", **ACCOUNT_TYPES}),
        "raw_type": "{类型:raw}",
        "account_id": "{@account}",
        "amount_minor": "{总金额（元）}",
        "amount_currency": f"'{CURRENCY}'",
        **_hidden(ACCOUNT_SUMMARY_COLUMNS),
    }
    return Layout(f"{FAMILY}.{_AS}", ACCOUNT_SUMMARY_COLUMNS, outputs)


_TD_LAYOUTS = {sign: _trade_detail_layout(sign) for sign in FEE_SIGNS}
_LAYOUTS: dict[str, Layout] = {_TD: _TD_LAYOUTS["as_written"], _TS: _trade_summary_layout(),
                               _AD: _account_detail_layout(), _AS: _account_summary_layout()}


def fee_sign(options: ParseOptions) -> str:
    """The configured 服务费 sign convention (module docstring); default ``as_written`` [inferred]."""
    sign = options.amount_signs.get(f"{FAMILY}.{_TD}", "as_written")
    if sign not in FEE_SIGNS:
        raise errors.ConfigError(f"amount_signs['{FAMILY}.{_TD}'] must be one of {FEE_SIGNS}, not {sign!r}")
    return sign


# ---------------------------------------------------------------------------------------------
# The '#' frame of a bill (spec 6.1, 7, 8.1, 9)


@dataclass(frozen=True)
class Footer:
    """One footer line; ``template`` is what the writer emits, the reader's pattern is derived from it."""

    label: str
    scope: str
    template: str  # {count} and one {<figure>} per amount

    @property
    def figures(self) -> tuple[str, ...]:
        return tuple(re.findall(r"\{(\w+)\}", self.template))

    @property
    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"(\{\w+\})", self.template)
        out = []
        for part in parts:
            if part == "{count}":
                out.append(r"\s*([0-9]+)\s*")
            elif part.startswith("{"):
                out.append(r"\s*([^元，,]*?)\s*")
            else:  # full- or half-width punctuation (spec 5 says full-width; tolerate both)
                out.append(re.escape(part).replace("：", "[：:]").replace("，", "[，,]"))
        return re.compile("".join(out))


@dataclass(frozen=True)
class Frame:
    """The lines around a bill's table."""

    title: str
    list_name: str  # 业务明细列表 ...: the markers are '#' + dashes + name (+ 结束) + dashes
    start_dashes: tuple[tuple[int, int], ...]  # accepted (before, after); empty: any (not recorded, spec 9)
    end_dashes: tuple[tuple[int, int], ...]
    footers: tuple[Footer, ...]
    kind: str  # the file-name word: 业务明细, 业务明细(汇总), ...
    written: tuple[tuple[int, int], tuple[int, int]]  # the (start, end) dash counts the writer uses

    def start_marker(self, dashes: tuple[int, int] | None = None) -> str:
        a, b = dashes or self.written[0]
        return "#" + "-" * a + self.list_name + "-" * b

    def end_marker(self, dashes: tuple[int, int] | None = None) -> str:
        a, b = dashes or self.written[1]
        return "#" + "-" * a + self.list_name + "结束" + "-" * b


_TRADE_FOOTERS = (
    Footer("交易合计", "PAYMENT", "#交易合计：{count}笔，商家实收共{settlement}元，商家优惠共{merchant_discount}元"),
    Footer("退款合计", "REFUND",
           "#退款合计：{count}笔，商家实收退款共{settlement}元，商家优惠退款共{merchant_discount}元"),
)
_ACCOUNT_FOOTERS = (  # this order (spec 8.1); the reader accepts either
    Footer("支出合计", "EXPENSE", "#支出合计：{count}笔，共{amount}元"),
    Footer("收入合计", "INCOME", "#收入合计：{count}笔，共{amount}元"),
)
# Dash counts: spec 6.1 lines 4 and 7 (41/36; one mock uses 40/37), 7 (summary end 40/37), 8.1 (40/37 in 2012,
# 41/36 in 2026). Unrecorded ones (spec 9) accept any count and are written like the 业务汇总 ones [inferred].
_START, _END_41, _END_40 = (41, 40), (41, 36), (40, 37)
FRAMES: dict[str, Frame] = {
    _TD: Frame("#支付宝业务明细查询", "业务明细列表", (_START,), (_END_41, _END_40), _TRADE_FOOTERS, "业务明细",
               (_START, _END_41)),
    _TS: Frame("#支付宝业务汇总查询", "业务汇总列表", (_START,), (_END_40,), (), "业务明细(汇总)", (_START, _END_40)),
    _AD: Frame("#支付宝账务明细查询", "账务明细列表", (_START,), (_END_40, _END_41), _ACCOUNT_FOOTERS, "账务明细",
               (_START, _END_41)),
    _AS: Frame("#支付宝账务汇总查询", "账务汇总列表", (), (), (), "账务明细(汇总)", (_START, _END_40)),
}
_TITLES = {f.title for f in FRAMES.values()}
_MARKER_RE = re.compile(r"#(-+)([^-]+?)(-+)")
_STAMP = r"\[\s*([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日\s+([0-9]{1,2}):([0-9]{2}):([0-9]{2})\s*\]"
_ACCOUNT_RE = re.compile(r"#账号[：:]\s*\[\s*([^\]]*?)\s*\]")
_PERIOD_RE = re.compile(rf"#起始日期[：:]\s*{_STAMP}\s*终止日期[：:]\s*{_STAMP}")
_EXPORTED_RE = re.compile(rf"#导出时间[：:]\s*{_STAMP}")


def _comment(text: str) -> str:
    """A '#' line without the trailing empty cells an Excel re-save adds (spec 8.1 [anecdote])."""
    return text.rstrip().rstrip(",").rstrip()


def _stamp_text(groups: Sequence[str]) -> str | None:
    """``yyyy-MM-dd HH:mm:ss`` from the 年/月/日 groups, None when no such instant."""
    y, mo, d, h, mi, s = (int(g) for g in groups)
    try:
        return datetime(y, mo, d, h, mi, s).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Decoding: GB18030 -> a UTF-8 copy of the head and table, in one pass (the tail is kept in memory).
# Work is done on bytes where it can be: in GBK/GB18030 the bytes 0x09 (TAB), 0x0A (LF), 0x2C (comma) and
# 0x23 ('#') never occur inside a multi-byte character (trail bytes are 0x30-0x39 or 0x40-0xFE), so TABs are
# dropped and lines and '#' lines found before decoding. Every TAB goes, as dax-pay's replaceAll (spec 5):
# they are padding; spaces around cells are trimmed after the CSV split (``read_csv_body``'s ``trim_cells``).


@dataclass
class _BillText:
    head: list[tuple[int, str]] = field(default_factory=list)  # '#' / blank lines before the header
    header_line: int | None = None
    header_text: str = ""
    tail: list[tuple[int, str]] = field(default_factory=list)  # from the first '#' line after the header
    tail_overflow: int | None = None  # line at which the tail grew too long (data rows after the end?)
    body: SourceFile | None = None  # facts of the UTF-8 copy (lines 1 .. last table line)
    ok: bool = True  # False: decoding stopped, a problem says where


class _Undecodable(Exception):
    def __init__(self, problem: errors.FormatError) -> None:
        super().__init__(str(problem))
        self.problem = problem


class _Decoder:
    """Feeds byte blocks (each starting at a line start, TABs removed) through head -> table -> tail."""

    def __init__(self, out: Any, result: _BillText, name: str) -> None:
        self.out = out
        self.r = result
        self.name = name
        self.state = "head"
        self.lines = 0  # complete lines consumed
        self.tail_parts: list[bytes] = []
        self.tail_size = 0
        self.tail_first = 0
        self.out_size = 0
        self.out_newlines = 0
        self.out_last = b""

    def _decode(self, data: bytes) -> str:
        """Strict GB18030; the first bad byte becomes a BadEncoding at its line and cell."""
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError as exc:
            header = _split(self.r.header_text) if self.r.header_line else []
            raise _Undecodable(_bad_encoding(data, exc, self.lines, header, self.name, self.r.header_line)) from None

    def _write(self, text: str, newlines: int) -> None:
        if text:
            data = text.encode("utf-8")
            self.out.write(data)
            self.out_size += len(data)
            self.out_newlines += newlines
            self.out_last = data[-1:]

    def feed(self, block: bytes) -> None:
        pos = self._head(block) if self.state == "head" else 0
        if self.state == "table" and pos < len(block):
            pos = self._table(block, pos)
        if self.state == "tail" and pos < len(block):
            self._tail(block[pos:])

    def _head(self, block: bytes) -> int:
        pos = 0
        while pos < len(block) and self.state == "head":
            nl = block.find(b"\n", pos)
            end = len(block) if nl < 0 else nl + 1
            raw = block[pos:end]
            if raw.startswith(b"#") and (len(self.r.head) >= _MAX_HEAD_LINES or _END_MARKER.search(raw)):
                self.state = "tail"  # no column header: the rest is read as the tail
                self.tail_first = self.lines + 1
                return pos
            text = self._decode(raw)
            self.lines += 1
            line = text.rstrip("\r\n")
            if line.startswith("#") or not line.strip():
                self.r.head.append((self.lines, line))
            else:
                self.r.header_line, self.r.header_text = self.lines, line
                self.state = "table"
            self._write(text, raw.count(b"\n"))
            pos = end
        return pos

    def _table(self, block: bytes, pos: int) -> int:
        # Table rows never start with '#' (ids, store ids or types come first): the first '#' line ends it.
        cut = block.find(b"#", pos)  # one-byte search (memchr): '#' is rare, a hit inside a cell is skipped
        while cut > pos and block[cut - 1] != 0x0A:
            cut = block.find(b"#", cut + 1)
        if cut < 0:
            cut = len(block)
        part = block[pos:cut]
        newlines = part.count(b"\n")
        self._write(self._decode(part), newlines)
        self.lines += newlines
        if cut < len(block):
            self.state = "tail"
            self.tail_first = self.lines + 1
        return cut

    def _tail(self, data: bytes) -> None:
        if self.r.tail_overflow is not None:
            return
        if self.tail_size + len(data) > _MAX_TAIL_BYTES:
            self.r.tail_overflow = self.tail_first + b"".join(self.tail_parts).count(b"\n")
            return
        self.tail_parts.append(data)
        self.tail_size += len(data)

    def finish(self, out_path: Path) -> None:
        if self.state == "table" and self.out_last not in (b"", b"\n"):
            self.lines += 1  # a last table line without its newline
        self.r.body = SourceFile(out_path, "", self.out_size, self.out_newlines, self.out_last in (b"", b"\n"))
        if self.r.tail_overflow is not None:
            return
        self.lines = self.tail_first - 1
        tail = self._decode(b"".join(self.tail_parts))
        self.r.tail = [(self.tail_first + i, line.rstrip("\r")) for i, line in enumerate(tail.split("\n"))]
        if self.r.tail and not self.r.tail[-1][1]:
            self.r.tail.pop()  # the newline that ends the file


_END_MARKER = re.compile(rb"^#-+[^-]+?\xbd\xe1\xca\xf8-+")  # '#---...结束---' (结束 in GB18030)


def _bad_encoding(block: bytes, exc: UnicodeDecodeError, lines_before: int, header: Sequence[str], name: str,
                  header_line: int | None) -> errors.FormatError:
    """Where the undecodable byte is: line and cell (commas are single bytes in GBK, never a trail byte)."""
    line = lines_before + block.count(b"\n", 0, exc.start) + 1
    start = block.rfind(b"\n", 0, exc.start) + 1
    col = block.count(b",", start, exc.start) + 1
    column = header[col - 1] if header_line is not None and line > header_line and col <= len(header) else None
    bad = block[exc.start:exc.start + 4]
    return errors.BadEncoding(f"byte 0x{bad[0]:02x} does not start a GB18030 (GBK) character", file=name,
                              line=line, column=column, column_index=col, expected="GBK / GB18030",
                              found=repr(bad))


def _decode_to(path: Path, out_path: Path, *, name: str, max_line_bytes: int,
               problems: list[errors.FormatError]) -> _BillText:
    """The UTF-8 copy of the head and table, and the '#' lines: in two halves at once where that is safe and
    worth it, else (and to name the first problem exactly) in one pass."""
    size = os.path.getsize(path)
    if size >= _HALVES_FROM:
        halves = _decode_in_halves(path, size, out_path, name=name, max_line_bytes=max_line_bytes)
        if halves is not None:
            return halves
    return _decode_in_one_pass(path, out_path, name=name, max_line_bytes=max_line_bytes, problems=problems)


def _decode_in_halves(path: Path, size: int, out_path: Path, *, name: str, max_line_bytes: int) -> _BillText | None:
    """Head lines here, the table in two halves (the second by a child process, ``gbk_range``), then the tail.

    The table is taken to end where the file's last run of '#' (and blank) lines starts; both halves check that
    no line inside starts with '#', so the result is the one-pass decoder's. None: anything unusual (the head
    does not end in the first block, a bad byte, an over-long line, a long tail, no child): decode in one pass.
    """
    result = _BillText()
    with open(path, "rb") as f, open(out_path, "wb") as out:
        head = f.read(_CHUNK)
        dec = _Decoder(out, result, name)
        try:
            dec._head(head[:head.rfind(b"\n") + 1].replace(b"\t", b""))
        except _Undecodable:
            return None
        if dec.state != "table":
            return None
        start = _offset_after_lines(head, dec.lines)
        end = _tail_start(f, size)
        if end is None or end <= start:
            return None
        mid = _line_end_after(f, (start + end) // 2, end)
        part = out_path.with_name("second-half.csv")
        child = _start_half(path, mid, end, part, max_line_bytes)
        first = gbk_range.decode_range(f, start, mid, out, max_line_bytes)
        second: dict[str, int | bool] | None
        if child is None:  # no second process: the same work here, straight after the first half
            second = gbk_range.decode_range(f, mid, end, out, max_line_bytes) if first["ok"] else first
        else:
            if not first["ok"]:
                child.kill()
            second = _finish_half(child)
            if first["ok"] and second is not None and second["ok"]:
                with open(part, "rb") as data:
                    shutil.copyfileobj(data, out, _CHUNK)
            part.unlink(missing_ok=True)
        if not (first["ok"] and second is not None and second["ok"]):
            return None
        dec.out_size += int(first["size"]) + int(second["size"])
        dec.out_newlines += int(first["newlines"]) + int(second["newlines"])
        dec.lines += int(first["newlines"]) + int(second["newlines"])
        last = int(second["last"] or first["last"])
        dec.out_last = bytes([last]) if last else dec.out_last
        if end < size:
            f.seek(end)
            dec.state = "tail"
            dec.tail_first = dec.lines + 1
            dec._tail(f.read().replace(b"\t", b""))
        try:
            dec.finish(out_path)
        except _Undecodable:
            return None
    return result


def _offset_after_lines(data: bytes, lines: int) -> int:
    pos = 0
    for _ in range(lines):
        pos = data.index(b"\n", pos) + 1
    return pos


def _tail_start(f: BinaryIO, size: int) -> int | None:
    """The start of the first '#' line of the file's last run of '#' and blank lines (``size``: no such run),
    TABs ignored as the one-pass decoder ignores them. None: the run is longer than a tail may be."""
    base = max(0, size - _MAX_TAIL_BYTES)
    f.seek(base)
    offset = size + 1
    first_hash = None
    for line in reversed(f.read().split(b"\n")):
        offset -= len(line) + 1
        if offset == base and base > 0:  # the window's first line may be cut short
            return None
        text = line.replace(b"\t", b"").rstrip(b"\r")
        if text.startswith(b"#"):
            first_hash = offset
        elif text:
            break
    return size if first_hash is None else first_hash


def _line_end_after(f: BinaryIO, pos: int, end: int) -> int:
    f.seek(pos)
    while pos < end:
        block = f.read(min(1 << 16, end - pos))
        nl = block.find(b"\n")
        if nl >= 0:
            return pos + nl + 1
        pos += len(block)
    return end


def _start_half(path: Path, start: int, end: int, out: Path, max_line_bytes: int) -> subprocess.Popen[bytes] | None:
    """``gbk_range`` in a child process on ``[start, end)``; None where no interpreter can be started."""
    if not sys.executable or start >= end:
        return None
    try:
        return subprocess.Popen([sys.executable, "-S", gbk_range.__file__, str(path), str(start), str(end),
                                 str(out), str(max_line_bytes)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None


def _finish_half(child: subprocess.Popen[bytes]) -> dict[str, int | bool] | None:
    stdout, _ = child.communicate()
    try:
        return json.loads(stdout) if child.returncode == 0 else None
    except ValueError:
        return None


def _decode_in_one_pass(path: Path, out_path: Path, *, name: str, max_line_bytes: int,
                        problems: list[errors.FormatError]) -> _BillText:
    result = _BillText()
    with open(path, "rb") as f, open(out_path, "wb") as out:
        dec = _Decoder(out, result, name)
        carry = b""
        try:
            while True:
                chunk = f.read(_CHUNK)
                buf = carry + chunk if carry else chunk
                if chunk:
                    cut = buf.rfind(b"\n") + 1
                    if cut == 0:
                        carry = buf
                        if len(carry) > max_line_bytes:
                            problems.append(errors.LineTooLong(
                                f"line longer than {max_line_bytes} bytes", file=name, line=dec.lines + 1,
                                expected=f"at most {max_line_bytes} bytes"))
                            result.ok = False
                            break
                        continue
                    block, carry = buf[:cut], buf[cut:]
                else:
                    block, carry = buf, b""
                    if not block:
                        break
                dec.feed(block.replace(b"\t", b"") if b"\t" in block else block)
                if not chunk:
                    break
            if result.ok:
                dec.finish(out_path)
        except _Undecodable as exc:
            problems.append(exc.problem)
            result.ok = False
    return result


def _split(text: str) -> list[str]:
    try:
        cells = split_csv_line(text)
    except Exception:  # csv.Error: a stray quote; the cells are still what a comma split gives
        cells = text.split(",")
    return [c.strip(_TRIM) for c in cells]


def _first_line_problem(path: Path, frame: Frame, name: str) -> errors.FormatError | None:
    """The anchor check (spec 5): the title line decodes to the expected title, else say why not."""
    with open(path, "rb") as f:
        raw = f.readline(4096).rstrip(b"\r\n")
    try:
        text = _comment(raw.decode("gb18030"))
    except UnicodeDecodeError:
        text = ""
    if text == frame.title:
        return None
    try:
        as_utf8 = _comment(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except UnicodeDecodeError:
        as_utf8 = ""
    if as_utf8 in _TITLES or (as_utf8 and not as_utf8.isascii()):
        return errors.BadEncoding("the file is UTF-8 but Alipay China bills are GBK (alipay-cn.md 5)", file=name,
                                  line=1, column_index=1, expected="GBK / GB18030", found="UTF-8: " + as_utf8[:40])
    if not raw:
        return errors.EmptyFile("the file is empty", file=name, line=1, expected=frame.title)
    return errors.BadSection(f"the first line is not {frame.title}", file=name, line=1, column_index=1,
                             expected=frame.title, found=(text or raw.decode("gb18030", "replace"))[:80])


# ---------------------------------------------------------------------------------------------
# The driver


class _Known(_Scan):
    """Facts already gathered while writing the UTF-8 copy (no second pass over it)."""

    def __init__(self, facts: SourceFile) -> None:
        super().__init__(facts.path)
        self.result = facts

    def join_result(self) -> SourceFile:
        assert self.result is not None
        return self.result


@dataclass(frozen=True)
class BillReport(ReportFormat):
    """One Alipay China bill: GBK, a '#' frame, a header-driven table (module docstring)."""

    family: str
    report: str
    name_re: re.Pattern[str]
    frame: Frame
    variants: tuple[Variant, ...]
    declare: DeclareFn | None = None
    extensions: tuple[str, ...] = (".csv",)

    def identify(self, name: str, head: Sequence[Sequence[str]]) -> int:
        """The title line decides (spec 7: it tells the files apart); the name adds confidence."""
        if not name.lower().endswith(".csv"):
            return 0
        by_name = self.name_meta(name) is not None
        first = next((cells for cells in head if any(c.strip() for c in cells)), None)
        by_title = first is not None and first[0].strip() == self.frame.title
        if by_title:
            return 3 if by_name else 2
        return 1 if by_name else 0

    def layout(self, options: ParseOptions, header: Sequence[str]) -> tuple[str, Layout]:
        variant = next((v for v in self.variants if v.matches(header)), self.variants[-1])
        layout = _TD_LAYOUTS[fee_sign(options)] if self.report == _TD else variant.layout
        return variant.name, _layout_for(self, layout, options, body=True)

    def parse(self, path: Path, con: duckdb.DuckDBPyConnection | None = None,
              options: ParseOptions | None = None, *, name: str | None = None) -> ParsedFile:
        parsed, con, options = self._start(path, con, options, name)
        scan = _Scan(parsed.path)  # sha256 of the original bytes, beside the decoding (hashing frees the GIL)
        scan.start()
        try:
            with tempfile.TemporaryDirectory(prefix="alirecon-cn-") as tmp:
                return self._parse(parsed, con, options, Path(tmp) / "table.csv")
        finally:
            facts = scan.join_result()
            parsed.sha256, parsed.size = facts.sha256, facts.size

    def _parse(self, parsed: ParsedFile, con: duckdb.DuckDBPyConnection, options: ParseOptions,
               utf8: Path) -> ParsedFile:
        name = parsed.name
        first = _first_line_problem(parsed.path, self.frame, name)
        if first is not None:
            parsed.problems.append(first)
            return parsed
        bill = _decode_to(parsed.path, utf8, name=name, max_line_bytes=options.max_line_bytes,
                          problems=parsed.problems)
        if not bill.ok:
            return parsed
        if self.report == _TD:
            parsed.meta["fee_sign"] = fee_sign(options)
        footers = _read_frame(self, bill, parsed)
        parsed.sections["footer"] = footers
        if bill.header_line is None or bill.body is None:
            parsed.problems.append(errors.BadSection("no column header after the '#' lines", file=name,
                                                     line=bill.head[-1][0] if bill.head else 1,
                                                     expected="the column header line"))
            return parsed
        header = _split(bill.header_text)
        parsed.header = header
        parsed.variant, layout = self.layout(options, header)
        _header_problems(parsed, layout, header, bill.header_line)
        found, _ = resolve_header(layout, header)  # with the user's aliases: provider_rows reads it
        parsed.sections["columns"] = [{"column": c, "index": i} for c, i in found.items()]
        compiled = compile_layout(layout, header, parsed.meta)
        body, _ = read_csv_body(con, utf8, name=name, header=header, compiled=compiled,
                                header_lines=bill.header_line, facts_thread=_Known(bill.body), trailer_offset=None,
                                options=options, trim_cells=_TRIM)
        header_line = bill.header_line

        def raw_source() -> str:
            return _raw_csv_table(con, utf8, len(header), header_line, options, parsed)

        _finish(parsed, con, body, compiled, raw_source, options, self.declare)
        if self.report == _TD:
            _sign_warnings(parsed, con, options)
        return parsed


def _sign_warnings(parsed: ParsedFile, con: duckdb.DuckDBPyConnection, options: ParseOptions) -> None:
    """订单金额 and 商家实收 are negative on 退款 rows and not on 交易 rows (spec 6.3 #11-12): a row that
    disagrees is kept (its amounts as written) with a warning, since every sum downstream would flip."""
    if parsed.body is None or not {"record_type", "amount_minor", "settlement_minor"} <= parsed.body.columns:
        return
    rows = con.execute(
        f"SELECT {parsed.body.line_sql}, record_type FROM {parsed.body.table} WHERE "
        "(record_type = 'REFUND' AND (amount_minor > 0 OR settlement_minor > 0)) OR "
        "(record_type = 'PAYMENT' AND (amount_minor < 0 OR settlement_minor < 0)) "
        f"ORDER BY rowid LIMIT {int(options.max_problems)}").fetchall()
    for line, kind in rows:
        expected = "negative amounts on a 退款 row" if kind == "REFUND" else "no negative amount on a 交易 row"
        parsed.problems.append(errors.BadValue(f"the amounts' sign does not fit 业务类型 ({expected})",
                                               file=parsed.name, line=int(line), column="订单金额（元）",
                                               expected=expected, severity="warning"))
    if rows:
        parsed.problems = sort_problems(parsed.problems, options.max_problems)


def _read_frame(report: BillReport, bill: _BillText, parsed: ParsedFile) -> list[dict[str, Any]]:
    """Head and tail lines -> meta, footer figures and structure problems (CN-1, CN-8)."""
    frame, name, problems = report.frame, parsed.name, parsed.problems
    meta: dict[str, str] = {}
    seen_start = False
    for line_no, raw in bill.head[1:]:
        text = _comment(raw)
        if not text:
            continue
        if m := _ACCOUNT_RE.fullmatch(text):
            meta["account"] = m.group(1)
        elif m := _PERIOD_RE.fullmatch(text):
            start, end = _stamp_text(m.groups()[:6]), _stamp_text(m.groups()[6:])
            if start is None or end is None or end <= start:
                problems.append(errors.BadDate("the period line names no valid period", file=name, line=line_no,
                                               column_index=1, expected="[YYYY年MM月DD日 HH:mm:ss], end after start",
                                               found=text[:80]))
            else:
                meta.update(_period_meta(start, end))
        elif _marker(text, frame, problems, name, line_no, end=False):
            seen_start = True
        else:
            problems.append(errors.BadSection("an unknown '#' line before the table (kept)", file=name, line=line_no,
                                              column_index=1, found=text[:80], severity="warning"))
    first_table = bill.header_line or (bill.head[-1][0] + 1 if bill.head else 1)
    for key, what in (("account", "#账号：[...]"), ("period_start", "#起始日期：[...]   终止日期：[...]")):
        if key not in meta:
            problems.append(errors.BadSection(f"the {what} line is missing", file=name, line=first_table,
                                              expected=what))
    if not seen_start:
        problems.append(errors.BadSection("the start marker is missing", file=name, line=first_table,
                                          expected=frame.start_marker()))
    footers = _read_tail(report, bill, parsed, meta)
    parsed.meta.update(meta)
    _name_problems(parsed)
    return footers


def _marker(text: str, frame: Frame, problems: list[errors.FormatError], name: str, line_no: int, *,
            end: bool) -> bool:
    m = _MARKER_RE.fullmatch(text)
    if not m or m.group(2) != frame.list_name + ("结束" if end else ""):
        return False
    accepted = frame.end_dashes if end else frame.start_dashes
    dashes = (len(m.group(1)), len(m.group(3)))
    if accepted and dashes not in accepted:
        problems.append(errors.BadSection(
            f"marker with {dashes[0]}/{dashes[1]} dashes (known: {', '.join(f'{a}/{b}' for a, b in accepted)})",
            file=name, line=line_no, column_index=1, expected=(frame.end_marker() if end else frame.start_marker()),
            found=text, severity="warning"))
    return True


def _read_tail(report: BillReport, bill: _BillText, parsed: ParsedFile, meta: dict[str, str]) -> list[dict[str, Any]]:
    frame, name, problems = report.frame, parsed.name, parsed.problems
    last_line = bill.tail[-1][0] if bill.tail else (bill.body.lines if bill.body else 1)
    lines = [(n, _comment(t)) for n, t in bill.tail if t.strip()]
    if bill.tail_overflow is not None:
        problems.append(errors.ContentAfterTrailer("more than a few lines follow the table's end", file=name,
                                                   line=bill.tail_overflow, expected="the end marker and footers"))
        return []
    if not lines or not _marker(lines[0][1], frame, problems, name, lines[0][0], end=True):
        problems.append(errors.TruncatedFile(
            "the end marker is missing: the file may be incomplete (CN-1)", file=name,
            line=lines[0][0] if lines else last_line, column_index=1, expected=frame.end_marker(),
            found=lines[0][1][:80] if lines else None))
        return []
    footers: list[dict[str, Any]] = []
    exported = False
    for line_no, text in lines[1:]:
        if not text.startswith("#"):
            problems.append(errors.ContentAfterTrailer("a table row after the end marker", file=name, line=line_no,
                                                       column_index=1, found=text[:80]))
            continue
        if m := _EXPORTED_RE.fullmatch(text):
            stamp = _stamp_text(m.groups())
            if stamp is None:
                problems.append(errors.BadDate("no such export time", file=name, line=line_no, column_index=1,
                                               found=text[:80]))
            else:
                meta["exported_at"] = stamp
            exported = True
            continue
        footer = next((f for f in frame.footers if text.startswith("#" + f.label)), None)
        if footer is None:
            problems.append(errors.BadSection("an unknown '#' line after the table (kept)", file=name, line=line_no,
                                              column_index=1, found=text[:80], severity="warning"))
            continue
        if any(f["label"] == footer.label for f in footers):
            problems.append(errors.BadSection(f"#{footer.label} appears twice", file=name, line=line_no,
                                              column_index=1, found=text[:80]))
            continue
        row = _footer_row(footer, text, line_no, name, problems)
        if row is not None:
            footers.append(row)
    for footer in frame.footers:
        if not any(f["label"] == footer.label for f in footers) and not any(
                t.startswith("#" + footer.label) for _, t in lines):
            problems.append(errors.TruncatedFile(f"the footer #{footer.label} is missing (CN-1)", file=name,
                                                 line=last_line, column_index=1, expected=footer.template))
    if not exported:
        problems.append(errors.TruncatedFile("the #导出时间 line is missing (CN-1)", file=name, line=last_line,
                                             column_index=1, expected="#导出时间：[YYYY年MM月DD日 HH:mm:ss]"))
    return footers


def _footer_row(footer: Footer, text: str, line_no: int, name: str,
                problems: list[errors.FormatError]) -> dict[str, Any] | None:
    m = footer.pattern.fullmatch(text)
    if not m:
        problems.append(errors.BadSection(f"#{footer.label} does not read as expected", file=name, line=line_no,
                                          column_index=1, expected=footer.template, found=text[:120]))
        return None
    row: dict[str, Any] = {"label": footer.label, "scope": footer.scope, "__line": line_no}
    for figure, value in zip(footer.figures, m.groups(), strict=True):
        if figure == "count":
            row[figure] = int(value)
            continue
        try:
            row[figure] = parse_major(value, CURRENCY)
        except MoneyError as exc:
            problems.append(errors.problem_class(exc.code)(f"#{footer.label} {figure}: {exc}", file=name,
                                                           line=line_no, column_index=1, found=value,
                                                           expected="yuan with at most 2 decimals"))
            return None
    return row


def _period_meta(start: str, end: str) -> dict[str, str]:
    """period_start/end and, for a whole day or month, ``period`` and the API's ``bill_date`` (spec 2.3)."""
    s, e = datetime.fromisoformat(start), datetime.fromisoformat(end)
    out = {"period_start": start, "period_end": end, "period": "other"}
    if s.time() == e.time() == datetime.min.time():
        if e - s == timedelta(days=1):
            out |= {"period": "daily", "bill_date": s.date().isoformat()}
        elif s.day == 1 and e.date() == _next_month(s.date()):
            out |= {"period": "monthly", "bill_date": s.strftime("%Y-%m")}
    return out


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def name_date_of(bill_date: str) -> str:
    """The file-name form of a bill date: ``2019-09-16`` -> ``20190916``, ``2019-09`` -> ``201909``."""
    return bill_date.replace("-", "")


def _name_problems(parsed: ParsedFile) -> None:
    """CN-8 at parse time: a warning (the file is kept; the check reports it)."""
    meta = parsed.meta
    pairs = (("name_account", "account", "#账号"), ("name_date", "bill_date", "period line"))
    for name_key, key, what in pairs:
        if name_key not in meta:
            continue
        content = meta.get(key)
        if key == "bill_date" and content is not None:
            content = name_date_of(content)
        if content != meta[name_key]:
            parsed.problems.append(errors.NameMismatch(
                f"the file name says {meta[name_key]!r}, the {what} {content!r}", file=parsed.name, line=None,
                expected=meta[name_key], found=content, severity="warning"))


# ---------------------------------------------------------------------------------------------
# Declared figures


def _declare_footers(parsed: ParsedFile, con: duckdb.DuckDBPyConnection) -> list[Declared]:
    out: list[Declared] = []
    for row in parsed.sections.get("footer", []):
        for figure in ("count", "settlement", "merchant_discount", "amount"):
            if figure in row:
                out.append(Declared(row["scope"], figure, int(row[figure]), int(row["__line"]),
                                    currency=None if figure == "count" else CURRENCY))
    return out


def _declare_summary(key_column: str, prefix: str) -> DeclareFn:
    def declare(parsed: ParsedFile, con: duckdb.DuckDBPyConnection) -> list[Declared]:
        if parsed.body is None:
            return []
        figures = SUMMARY_FIGURES[parsed.report]
        fields = [HIDDEN + key_column, *(HIDDEN + c for c in figures)]
        out: list[Declared] = []
        for row in rows_of(con, parsed, ", ".join(_ident(f) for f in fields if f in parsed.body.columns)):
            key = row.get(HIDDEN + key_column) or ""
            scope = "TOTAL" if key == "合计" else f"{prefix}:{key}"
            for column, figure in figures.items():
                value = row.get(HIDDEN + column)
                if value is not None:
                    out.append(Declared(scope, figure, int(value), int(row["__line_no"]),
                                        currency=None if figure.endswith("count") else CURRENCY))
        parsed.sections["summary"] = [{"scope": d.scope, "figure": d.figure, "value": d.value, "__line": d.line_no}
                                      for d in out]
        return out

    return declare


# ---------------------------------------------------------------------------------------------
# The four reports. Names: spec 4 (half-width parentheses; full-width tolerated), large bills in parts
# ``_1`` [inferred].


def _name_re(kind: str) -> re.Pattern[str]:
    kind_re = re.escape(kind).replace(r"\(", r"[(（]").replace(r"\)", r"[)）]")
    return re.compile(rf"(?P<name_account>[0-9]{{16,20}})_(?P<name_date>[0-9]{{8}}|[0-9]{{6}})_{kind_re}"
                      r"(?:_(?P<part>[0-9]+))?\.(?i:csv)")


def _report(report: str, variants: tuple[Variant, ...], declare: DeclareFn) -> BillReport:
    frame = FRAMES[report]
    return BillReport(FAMILY, report, _name_re(frame.kind), frame, variants, declare)


TRADE_DETAIL = _report(_TD, (Variant("v1", _LAYOUTS[_TD]),), _declare_footers)
TRADE_SUMMARY = _report(_TS, (Variant("v1", _LAYOUTS[_TS]),), _declare_summary("门店编号", "store"))
ACCOUNT_DETAIL = _report(_AD, (Variant("v16", _LAYOUTS[_AD], markers=("业务描述",)), Variant("v12", _LAYOUTS[_AD])),
                         _declare_footers)
ACCOUNT_SUMMARY = _report(_AS, (Variant("v1", _LAYOUTS[_AS]),), _declare_summary("类型", "type"))
REPORTS: tuple[ReportFormat, ...] = (TRADE_DETAIL, TRADE_SUMMARY, ACCOUNT_DETAIL, ACCOUNT_SUMMARY)
_BY_NAME: dict[str, BillReport] = {r.report: r for r in (TRADE_DETAIL, TRADE_SUMMARY, ACCOUNT_DETAIL, ACCOUNT_SUMMARY)}


# ---------------------------------------------------------------------------------------------
# Reading a parsed file back as provider rows (the inverse of write_report)


def provider_rows(parsed: ParsedFile) -> list[dict[str, Any]]:
    """The parsed table as rows keyed by documented column name: amounts int fen, times ``clock.Stamp``
    (UTC+8), counts int, texts trimmed (an empty cell is None). Needs ``keep_extras`` (the default)."""
    if parsed.body is None or parsed.con is None:
        return []
    layout = _LAYOUTS[parsed.report]
    found = {c["column"]: c["index"] for c in parsed.sections.get("columns", [])}
    cols = parsed.body.columns
    if "extras" not in cols:
        raise ValueError(f"{parsed.name}: provider_rows needs the texts in extras (parse with keep_extras)")
    out: list[dict[str, Any]] = []
    for row in rows_of(parsed.con, parsed, ", ".join(_ident(c) for c in sorted(cols))):
        extras = extras_dict(row.get("extras"), parsed.extras_names)
        cells: dict[str, Any] = {}
        for col in layout.columns:
            if col.name not in found:
                continue
            written = parsed.header[found[col.name]]
            if HIDDEN + col.name in cols:
                cells[col.name] = row[HIDDEN + col.name]
            elif written in extras:
                cells[col.name] = _typed(col, extras[written])
            else:
                cells[col.name] = _canonical_cell(parsed, col.name, row)
        out.append(cells)
    return out


def _typed(col: Column, text: str | None) -> Any:
    if text is None:
        return None
    if col.kind is Kind.AMOUNT:
        return parse_major(text, CURRENCY)
    if col.kind is Kind.TIMESTAMP:
        return parse_timestamp(text)
    if col.kind is Kind.INTEGER:
        return int(text)
    return text


def _stamp(row: Mapping[str, Any]) -> Stamp | None:
    at = row.get("occurred_at")
    return None if at is None else Stamp(at.astimezone(UTC), int(row["occurred_offset_min"]))


def _canonical_cell(parsed: ParsedFile, column: str, row: Mapping[str, Any]) -> Any:
    """A column whose text went into a canonical field only (the inverse of the layout's outputs)."""
    direct = {"支付宝交易号": "provider_txn_id", "业务流水号": "provider_txn_id", "商户订单号": "order_id",
              "业务类型": "raw_type", "订单金额（元）": "amount_minor", "商家实收（元）": "settlement_minor"}
    if column in direct:
        return row.get(direct[column])
    if column in ("完成时间", "发生时间"):
        return _stamp(row)
    if column == "服务费（元）":  # kept in extras; reached only for a file parsed without them
        fee = row.get("fee_minor")
        if fee is None or parsed.meta.get("fee_sign") != "by_type":
            return fee
        return fee if row.get("record_type") == "REFUND" else -fee
    return None  # an empty cell (extras hold only filled ones)


# ---------------------------------------------------------------------------------------------
# Writing (the sandbox writes every Alipay China bill through these)


def bill_period(bill_date: str | date | tuple[date, date]) -> tuple[date, date]:
    """[start, end) of a bill: ``2019-09-16`` (daily), ``2019-09`` (monthly, spec 2.3) or the pair itself."""
    if isinstance(bill_date, tuple):
        return bill_date
    if isinstance(bill_date, date):
        return bill_date, bill_date + timedelta(days=1)
    if re.fullmatch(r"[0-9]{4}-[0-9]{2}", bill_date):
        first = date(int(bill_date[:4]), int(bill_date[5:]), 1)
        return first, _next_month(first)
    day = date.fromisoformat(bill_date)
    return day, day + timedelta(days=1)


def file_name(report: str, account: str, bill_date: str | date, *, part: int | None = None) -> str:
    """``<account20>_<yyyyMMdd|yyyyMM>_<kind>[_<part>].csv`` (spec 4), checked to read back the same."""
    text = bill_date.isoformat() if isinstance(bill_date, date) else bill_date
    name = f"{account}_{name_date_of(text)}_{FRAMES[report].kind}{'' if part is None else f'_{part}'}.csv"
    meta = _BY_NAME[report].name_meta(name)
    if meta is None or meta.get("name_account") != account or meta.get("name_date") != name_date_of(text):
        raise ValueError(f"{name!r} would not read back as {report} of {account} / {text}")
    return name


def _cn_stamp(value: datetime) -> str:
    local = value.astimezone(UTC8) if value.tzinfo else value
    return local.strftime("%Y年%m月%d日 %H:%M:%S")


def _head_lines(frame: Frame, account: str, period: tuple[date, date]) -> list[str]:
    start, end = (datetime.combine(d, datetime.min.time()) for d in period)
    return [frame.title, f"#账号：[{account}]",
            f"#起始日期：[{_cn_stamp(start)}]   终止日期：[{_cn_stamp(end)}]",  # three spaces (spec 6.1 line 3)
            frame.start_marker()]


def _csv_cell(text: str) -> str:
    """As ``writer.write_csv`` quotes (RFC 4180, only where needed); real bills never needed it (spec 5)."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _amount_of(value: Any) -> int:
    """A cell's fen for the computed footers/summaries: an int, or a str written as given (stripped)."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip(_TRIM)
        return parse_major(text, CURRENCY) if text else 0
    raise TypeError(f"amounts are int fen or str, got {type(value).__name__}")


def _text_of(value: Any) -> str:
    return "" if value is None else str(value).strip(_TRIM)


@dataclass
class _Totals:
    """Footer figures accumulated while the rows are written (scope -> figure -> value)."""

    report: str
    values: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, row: Mapping[str, Any]) -> None:
        if self.report == _TD:
            kind = _TRADE_TYPES.get(_text_of(row.get("业务类型")))
            if kind is None:
                return
            v = self.values.setdefault(kind, {"count": 0, "settlement": 0, "merchant_discount": 0})
            v["count"] += 1
            v["settlement"] += _amount_of(row.get("商家实收（元）"))
            v["merchant_discount"] += _amount_of(row.get("商家优惠（元）"))
        elif self.report == _AD:
            # spec 8.3 [inferred]: a row counts on the side where it has a non-zero amount
            for scope, column in (("INCOME", "收入金额（+元）"), ("EXPENSE", "支出金额（-元）")):
                amount = _amount_of(row.get(column))
                v = self.values.setdefault(scope, {"count": 0, "amount": 0})
                if amount:
                    v["count"] += 1
                    v["amount"] += amount

    def lines(self, frame: Frame, override: Mapping[str, Mapping[str, int]] | None) -> list[str]:
        out = []
        for footer in frame.footers:
            figures = {f: 0 for f in footer.figures} | self.values.get(footer.scope, {})
            figures |= dict((override or {}).get(footer.scope, {}))
            text = {f: str(v) if f == "count" else format_major(v, CURRENCY) for f, v in figures.items()}
            out.append(footer.template.format(**text))
        return out


def iter_lines(report: str, rows: Iterable[Mapping[str, Any]], *, account: str,
               period: str | date | tuple[date, date], exported_at: datetime | Stamp,
               header: Sequence[str] | None = None, totals: Mapping[str, Mapping[str, int]] | None = None,
               pad: Collection[str] | None = None, end_dashes: tuple[int, int] | None = None) -> Iterator[str]:
    """The bill's lines (without line ends), rows rendered one at a time: a 1M-row bill never sits in memory
    as cells. See ``write_report``."""
    if report not in _BY_NAME:
        raise ValueError(f"unknown Alipay China report {report!r}; expected one of {sorted(_BY_NAME)}")
    frame, layout = FRAMES[report], _LAYOUTS[report]
    names = tuple(header) if header is not None else HEADERS[(report, "v16" if report == _AD else "v1")]
    by_name = {c.name: c for c in layout.columns}
    padded = _PADDED[report] if pad is None else frozenset(pad)
    specs = [(by_name.get(n), n, "\t" if n in padded else "") for n in names]
    sums = _Totals(report)
    yield from _head_lines(frame, account, bill_period(period))
    yield ",".join(names)
    for row in rows:
        cells = []
        for col, n, pad_text in specs:
            value = row.get(n)
            # None and str are written as given (format_cell's rule), without the call: 1M-row bills
            text = "" if value is None else value if type(value) is str else format_cell(col, value, row,
                                                                                         ts_style="plain")
            cells.append(text + pad_text)
        line = ",".join(cells)
        if line.count(",") != len(cells) - 1 or '"' in line or "\n" in line or "\r" in line:
            line = ",".join(_csv_cell(c) for c in cells)
        yield line
        sums.add(row)
    yield frame.end_marker(end_dashes)
    yield from sums.lines(frame, totals)
    stamp = exported_at.local if isinstance(exported_at, Stamp) else exported_at
    yield f"#导出时间：[{_cn_stamp(stamp)}]"


def write_report(report: str, rows: Iterable[Mapping[str, Any]], *, account: str,
                 period: str | date | tuple[date, date], exported_at: datetime | Stamp,
                 header: Sequence[str] | None = None, newline: str = "\r\n",
                 totals: Mapping[str, Mapping[str, int]] | None = None, pad: Collection[str] | None = None,
                 end_dashes: tuple[int, int] | None = None) -> bytes:
    """A bill's bytes from provider rows (documented column name -> python value).

    Values: amounts int fen, times ``Stamp`` or aware ``datetime`` (written ``yyyy-MM-dd HH:mm:ss`` in UTC+8),
    counts int, texts str; a ``str`` is written as given (how a test injects a bad cell), None as empty. TAB
    padding per spec 6.3 / 8.3 (``pad`` overrides the padded columns). ``period``: ``yyyy-MM-dd`` (daily),
    ``yyyy-MM`` (monthly) or a (start, end) date pair, end exclusive. Footers are computed from the rows;
    ``totals`` (scope -> figure -> value, as in the declared figures) overrides some (a file that disagrees with
    itself). GB18030 bytes, which are GBK's for every GBK character; CRLF by default (spec 5 [inferred]); a line
    end after the last line. ``header``: another column order or generation (account_detail: v16 by default,
    ``HEADERS[("account_detail", "v12")]`` for the 2012 layout).
    """
    lines = iter_lines(report, rows, account=account, period=period, exported_at=exported_at, header=header,
                       totals=totals, pad=pad, end_dashes=end_dashes)
    return "".join(line + newline for line in lines).encode("gb18030")


def summarise_trades(rows: Iterable[Mapping[str, Any]], *, sign: str = "as_written") -> list[dict[str, Any]]:
    """The 业务明细(汇总) rows of 业务明细 rows: one per 门店编号 (sorted), then 合计 (spec 7).

    Amounts are sums over every row, refunds included (net) [inferred: spec 7 gap]; 实收净额 = 商家实收 + the
    fee in the canonical sign (negative = charged) [inferred: spec 7 gives 商家实收 - 服务费 for an unsigned fee].
    """
    sums = ("订单金额（元）", "商家实收（元）", "支付宝优惠（元）", "商家优惠（元）", "卡消费金额（元）",
            "服务费（元）", "分润（元）")
    stores: dict[str, dict[str, Any]] = {}
    for row in rows:
        store = _text_of(row.get("门店编号"))
        s = stores.setdefault(store, {"门店编号": store or None, "门店名称": _text_of(row.get("门店名称")) or None,
                                      "交易订单总笔数": 0, "退款订单总笔数": 0, **dict.fromkeys(sums, 0),
                                      "实收净额（元）": 0})
        kind = _text_of(row.get("业务类型"))
        s["交易订单总笔数"] += kind == "交易"
        s["退款订单总笔数"] += kind == "退款"
        for column in sums:
            s[column] += _amount_of(row.get(column))
        fee = _amount_of(row.get("服务费（元）"))
        s["实收净额（元）"] += _amount_of(row.get("商家实收（元）")) + (
            fee if sign == "as_written" else fee if kind == "退款" else -fee)
    out = [stores[k] for k in sorted(stores)]
    total: dict[str, Any] = {"门店编号": "合计", "门店名称": None}
    for column in ("交易订单总笔数", "退款订单总笔数", *sums, "实收净额（元）"):
        total[column] = sum(s[column] for s in out)
    return [*out, total]


def summarise_account(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The 账务明细(汇总) rows of 账务明细 rows: one per 业务类型 (sorted), then 合计 (spec 9)."""
    kinds: dict[str, dict[str, Any]] = {}
    for row in rows:
        kind = _text_of(row.get("业务类型"))
        k = kinds.setdefault(kind, {"类型": kind, "收入笔数": 0, "收入金额（+元）": 0, "支出笔数": 0,
                                    "支出金额（-元）": 0})
        income, expense = _amount_of(row.get("收入金额（+元）")), _amount_of(row.get("支出金额（-元）"))
        k["收入笔数"] += income != 0
        k["收入金额（+元）"] += income
        k["支出笔数"] += expense != 0
        k["支出金额（-元）"] += expense
    out = [kinds[k] for k in sorted(kinds)]
    total: dict[str, Any] = {"类型": "合计"}
    for column in ("收入笔数", "收入金额（+元）", "支出笔数", "支出金额（-元）"):
        total[column] = sum(k[column] for k in out)
    for row in (*out, total):
        row["总金额（元）"] = row["收入金额（+元）"] + row["支出金额（-元）"]
    return [*out, total]


def account_rows(movements: Iterable[Mapping[str, Any]], opening_balance: int, *,
                 newest_first: bool = False) -> list[dict[str, Any]]:
    """账务明细 rows with 账户余额 filled in: ``movements`` in time order, each with int 收入/支出 (支出 negative,
    spec 8.3); the balance after each movement; returned newest first when asked (the 2012 bill, spec 8.3)."""
    balance = opening_balance
    out = []
    for m in movements:
        balance += _amount_of(m.get("收入金额（+元）")) - abs(_amount_of(m.get("支出金额（-元）")))
        out.append({**m, "账户余额（元）": balance})
    return out[::-1] if newest_first else out
