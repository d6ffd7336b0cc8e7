"""The sandbox world's Alipay China merchant: daily trade and account bills behind the open-platform gateway.

The bills are what ``alipay.data.dataservice.bill.downloadurl.query`` hands out (alipay-cn.md 4): per day a zip
of 业务明细 + 业务明细(汇总) (``bill_type=trade``) and one of 账务明细 + 账务明细(汇总) (``signcustomer``), with
GBK entry names, stored as ``<world>/alipay_cn/<pid>/<bill_type>/<yyyyMMdd>.csv.zip`` for the gateway's
``DirectoryBillStore``. Not on SFTP: the merchant fetches them through the API.

Facts the generator rests on [inferred, each configurable on the reading side]: the fee (服务费) is written
negative on a trade and returned positive on a refund (``parse.amount_signs``, alipay-cn.md 6.3 #22); a refund
row carries the original 支付宝交易号 and 商户订单号 and its own 退款批次号/请求号 (6.3 #0, #1, #21); every
settled trade and its fee are account movements the same day (11 CN-7); the account bill lists movements
oldest first (8.3 allows both orders; CN-5 detects which).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..clock import UTC8
from ..formats import alipay_cn as cn
from ..money import format_major
from ..sources.billzip import write_bill_zip
from .model import Account, Ids, Txn, pct, write_csv_ledger

__all__ = ["CN_FEE_PCT", "CN_MERCHANT", "BillFaults", "bill_zip_path", "cn_fee", "render_alipay_cn", "write_cn_ledger"]

# account20 = the 16-digit PID + 0156 (alipay-cn.md 2.4 [inferred from the numbers])
CN_MERCHANT = Account("alipay_cn", "20887217759422330156", "MERCHANT", "CNY", ("CNY",))
CN_FEE_PCT = Decimal("0.6")  # the usual face-to-face rate; any rate works, the bills carry the figures
OPENING_BALANCE = 100_000_000  # fen
DETAIL_FIRST_LINE = 6  # title, 账号, period, start marker, column header, then the rows (alipay-cn.md 6.1)
BILL_TYPES = {"trade": ("trade_detail", "trade_summary"), "signcustomer": ("account_detail", "account_summary")}


def cn_fee(t: Txn) -> int:
    """As written [inferred]: a trade's fee negative, a refund's fee returned positive."""
    fee = pct(t.amount, CN_FEE_PCT)
    return -fee if t.kind == "PAYMENT" else fee


def bill_zip_path(root: Path, account20: str, bill_type: str, period: str) -> Path:
    """Where the gateway's ``DirectoryBillStore`` looks for a bill (``period``: yyyy-MM-dd or yyyy-MM)."""
    return root / "alipay_cn" / account20[:16] / bill_type / f"{period.replace('-', '')}.csv.zip"


@dataclass
class BillFaults:
    """One discrepancy per check, each on its own day (None: none)."""

    footer_day: date | None = None  # 交易合计 states 1.00 more 商家实收 (CN-3)
    balance_day: date | None = None  # one 账户余额 off by 0.01 (CN-5)
    fee_day: date | None = None  # one fee movement missing from the account bill (CN-7)


def _trade_row(t: Txn) -> dict[str, Any]:
    order = t.original or t
    refund = t.kind == "REFUND"
    zero = dict.fromkeys(("支付宝红包（元）", "集分宝（元）", "支付宝优惠（元）", "商家优惠（元）", "券核销金额（元）",
                          "商家红包消费金额（元）", "卡消费金额（元）", "分润（元）"), 0)
    return {"支付宝交易号": order.provider_id, "商户订单号": order.request_id, "业务类型": "退款" if refund else "交易",
            "商品名称": order.description.replace("\n", " ") or "商品", "创建时间": order.at, "完成时间": t.at,
            "门店编号": "", "门店名称": "", "操作员": "", "终端号": "", "对方账户": "*三(138****0000)",
            "订单金额（元）": t.amount, "商家实收（元）": t.amount, "券名称": "", **zero,
            "退款批次号/请求号": t.request_id if refund else "", "服务费（元）": t.fee, "备注": ""}


def _movements(t: Txn, serial: Ids) -> list[dict[str, Any]]:
    """The account movements of one trade row: its 商家实收, then its fee (CN-7)."""
    order = t.original or t
    common = {"业务流水号": order.provider_id, "商户订单号": order.request_id, "商品名称": "",
              "发生时间": t.at, "对方账号": "张三 (138****0000)", "交易渠道": "支付宝", "备注": ""}
    out = []
    for amount, kind in ((t.amount, "在线支付" if t.kind == "PAYMENT" else "交易退款"), (t.fee, "收费")):
        if amount:
            out.append({"账务流水号": serial.next("5463244653", 10), **common, "业务类型": kind,
                        "收入金额（+元）": max(amount, 0), "支出金额（-元）": min(amount, 0)})
    return out


def render_alipay_cn(root: Path, acc: Account, report: Sequence[Txn], dup_in_report: set[str], days: Sequence[date],
                     rng: random.Random, faults: BillFaults) -> list[dict[str, Any]]:
    """Write every day's two bill zips, then each month's (the month's days restated, faults included: the
    provider's monthly bill is made of the same records); return the check failures (truth entries)."""
    account = acc.account_id
    serial = Ids()
    balance = OPENING_BALANCE
    failures: list[dict[str, Any]] = []
    months: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for day in days:
        month = f"{day:%Y-%m}"
        keys = (f"{day:%Y%m%d}", f"{day:%Y%m}")  # how the checks name the day's bills and the month's
        month_trades, month_rows = months.setdefault(month, ([], []))
        txns = [t for t in report if t.day == day]
        trades = []
        for t in txns:
            trades.append(_trade_row(t))
            if t.request_id in dup_in_report:  # the second listing has no account movements of its own
                trades.append(_trade_row(t))
                failures.extend({"check_id": "CN-7", "reason_code": f"{what.upper()}_MOVEMENT_MISSING",
                                 "scope": f"{account}/{key}/{t.provider_id}/{what}"}
                                for what in ("settlement", "fee") for key in keys)
        movements = [m for t in txns for m in _movements(t, serial)]
        if day == faults.fee_day:
            fee = next(i for i, m in enumerate(movements) if m["业务类型"] == "收费")
            gone = movements.pop(fee)
            failures.extend({"check_id": "CN-7", "reason_code": "FEE_MOVEMENT_MISSING",
                             "scope": f"{account}/{key}/{gone['业务流水号']}/fee"} for key in keys)
        rows = cn.account_rows(movements, balance)
        if day == faults.balance_day and len(rows) >= 2:
            # from one row on, every balance is 0.01 higher (and so are the next days'): a movement the bill
            # does not list, one break in the day's bill and one in the month's
            i = rng.randrange(1, len(rows))
            for row in rows[i:]:
                row["账户余额（元）"] += 1
            for period, line in ((day, DETAIL_FIRST_LINE + i), (month, DETAIL_FIRST_LINE + len(month_rows) + i)):
                failures.append({"check_id": "CN-5", "reason_code": "BALANCE_BREAK",
                                 "scope": f"{cn.file_name('account_detail', account, period)}/line {line}"})
        if rows:
            balance = rows[-1]["账户余额（元）"]
        totals = None
        if day == faults.footer_day:  # the day's footer only: the month's is computed from its rows
            stated = sum(r["商家实收（元）"] for r in trades if r["业务类型"] == "交易") + 100
            totals = {"PAYMENT": {"settlement": stated}}
            failures.append({"check_id": "CN-3", "reason_code": "FOOTER_SETTLEMENT_MISMATCH",
                             "scope": f"{account}/{day:%Y%m%d}/{cn.file_name('trade_detail', account, day)}/PAYMENT"})
        _write_bills(root, account, day.isoformat(), trades, rows, day + timedelta(days=1), totals)
        month_trades.extend(trades)
        month_rows.extend(rows)
    for month, (trades, rows) in months.items():
        start = date.fromisoformat(f"{month}-01")
        exported_on = (start + timedelta(days=32)).replace(day=2)  # generated early in the next month (2.3)
        _write_bills(root, account, month, trades, rows, exported_on)
    return failures


def _write_bills(root: Path, account: str, period: str, trades: list[dict[str, Any]], rows: list[dict[str, Any]],
                 exported_on: date, totals: dict[str, dict[str, int]] | None = None) -> None:
    """The period's two zips: 业务明细 + 汇总 (trade) and 账务明细 + 汇总 (signcustomer)."""
    exported = datetime.combine(exported_on, time(3, 12), UTC8)
    bills = {"trade_detail": cn.write_report("trade_detail", trades, account=account, period=period,
                                             exported_at=exported, totals=totals),
             "trade_summary": cn.write_report("trade_summary", cn.summarise_trades(trades), account=account,
                                              period=period, exported_at=exported),
             "account_detail": cn.write_report("account_detail", rows, account=account, period=period,
                                               exported_at=exported),
             "account_summary": cn.write_report("account_summary", cn.summarise_account(rows), account=account,
                                                period=period, exported_at=exported)}
    for bill_type, (detail, summary) in BILL_TYPES.items():
        # real zips put the summary first (alipay-cn.md 4): readers must not rely on the order
        entries = [(cn.file_name(r, account, period), bills[r]) for r in (summary, detail)]
        path = bill_zip_path(root, account, bill_type, period)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(write_bill_zip(entries))


def write_cn_ledger(root: Path, acc: Account, rows: Sequence[Any]) -> dict[str, Any]:
    """A Chinese merchant's order export: Chinese headers, yuan, refunds positive with their type."""
    rel = write_csv_ledger(root, "ledgers/cn_merchant_orders.csv",
                           ["商户订单号", "类型", "原订单号", "金额", "币种", "状态", "支付时间"],
                           ([r.request_id, "支付" if r.kind == "PAYMENT" else "退款", r.original_request_id or "",
                             format_major(abs(r.amount), r.currency), r.currency,
                             "成功" if r.status == "SUCCESS" else "失败",
                             r.at.utc.astimezone(UTC8).strftime("%Y-%m-%d %H:%M:%S")] for r in rows))
    return {"name": "cn-orders", "path": rel, "family": "alipay_cn", "account_id": acc.account_id,
            "amount_unit": "major", "refund_sign": "negate_reverse_types",  # times: UTC+8 by default
            "columns": {"merchant_ref_id": "商户订单号", "record_type": "类型", "original_merchant_ref_id": "原订单号",
                        "amount": "金额", "currency": "币种", "status": "状态", "occurred_at": "支付时间"},
            "record_types": {"支付": "PAYMENT", "退款": "REFUND"},
            "statuses": {"成功": "SUCCESS", "失败": "FAILED"}}
