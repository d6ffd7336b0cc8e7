"""Build a whole provider world on disk: SFTP-shaped report trees, the users' ledgers and the truth.

The files are written through the same ``formats`` writers that read them. Discrepancies are injected
into one side on purpose and every injection is recorded in ``truth.json`` with exactly what alirecon
must report for it (exception class + reason + key per matched report, or check id + reason + scope).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..clock import UTC8, Stamp, add_business_days
from ..formats import alipayplus, antom
from ..formats.writer import format_timestamp
from ..money import format_major
from .model import Account, Ids, Txn, WorldSpec, generate_txns, pct, refund_of, write_csv_ledger
from .world_cn import CN_MERCHANT, BillFaults, cn_fee, render_alipay_cn, write_cn_ledger

__all__ = ["World", "build_world"]

ANTOM_MERCHANT = Account("antom", "1022188000000000001", "MERCHANT", "USD", ("USD", "JPY", "KWD", "EUR"),
                         own_settlement=("JPY",))
ACQP = Account("alipayplus", "1022ACQP00000001", "ACQP", "USD", ("JPY", "KWD", "USD"), agreement_id="20210000")
MPP = Account("alipayplus", "A1234567890", "MPP", "EUR", ("JPY", "KWD", "EUR"),
              agreement_id="202109171107900901003800022697", quiet_days=(5,))
# A second merchant on the current Antom schema (v2) receiving xlsx files: failed payments are listed too.
ANTOM_MERCHANT_V2 = Account("antom", "1022188000000000002", "MERCHANT", "USD", ("USD", "JPY", "KWD"),
                            own_settlement=("JPY",), variant="v2", fmt="xlsx")
ACCOUNTS = (ANTOM_MERCHANT, ANTOM_MERCHANT_V2, ACQP, MPP)
MIN_INJECT_DAYS = 7
MIN_INJECT_PAYMENTS = 6
MATCH_REPORTS = {"antom": ("transaction_detail", "settlement_detail"), "alipayplus": ("transaction_detail",),
                 "alipay_cn": ("trade_detail",)}
ANTOM_ACQUIRER = "Alipay_SG"
ANTOM_FEE_PCT = Decimal("2.0")
ANTOM_TAX_PCT = Decimal("6.0")  # v2 merchant: tax on the payment-method fee
INTERCHANGE_PCT = Decimal("0.8")
SERVICE_PCT = Decimal("0.2")


@dataclass
class LedgerRow:
    """What the user recorded for one transaction (possibly wrong, on purpose)."""

    txn: Txn
    request_id: str
    kind: str
    original_request_id: str | None
    amount: int
    currency: str
    status: str
    at: Stamp


@dataclass
class Truth:
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    check_failures: list[dict[str, Any]] = field(default_factory=list)
    duplicate_deliveries: list[str] = field(default_factory=list)  # relative paths of repeated bytes
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    boundaries: list[dict[str, Any]] = field(default_factory=list)
    injections: list[str] = field(default_factory=list)

    def expect(self, family: str, reports: Iterable[str], cls: str, reason: str, key: str, record_type: str) -> None:
        for report in reports:
            self.exceptions.append({"family": family, "report": report, "exception_class": cls,
                                    "reason_code": reason, "match_key": key, "record_type": record_type})

    def fail(self, check_id: str, reason: str, scope: str | None) -> None:
        """``scope`` None: filled in once known (a settlement line written later)."""
        self.check_failures.append({"check_id": check_id, "reason_code": reason, "scope": scope})


@dataclass
class AccountView:
    """The provider's records (``report``) and the user's (``ledger``) for one account."""

    account: Account
    report: list[Txn]
    ledger: list[LedgerRow]
    dup_in_report: set[str] = field(default_factory=set)  # request ids listed twice in the detail file
    # payments the provider knows as failed: listed (status FAIL) only by Antom v2 transaction details
    failed: list[Txn] = field(default_factory=list)


@dataclass
class World:
    spec: WorldSpec
    root: Path
    files: list[str] = field(default_factory=list)  # provider files, relative to root/provider
    publish: dict[str, datetime] = field(default_factory=dict)  # file -> when the provider publishes it (UTC)
    ledgers: list[dict[str, Any]] = field(default_factory=list)  # ledger configs (with paths relative to root)
    truth: Truth = field(default_factory=Truth)

    @property
    def provider(self) -> Path:
        return self.root / "provider"

    def provider_files(self) -> list[Path]:
        return [self.provider / f for f in self.files]


# ---------------------------------------------------------------------------------------------
# Injections


def _ledger_row(t: Txn) -> LedgerRow:
    return LedgerRow(t, t.request_id, t.kind, t.original.request_id if t.original else None, t.amount, t.currency,
                     t.ledger_status, t.at)


def _pool(view: AccountView, rng: random.Random, boundary_ids: set[str]) -> list[Txn]:
    refunded = {t.original.request_id for t in view.report if t.original}
    pool = [t for t in view.report if t.kind == "PAYMENT" and t.request_id not in refunded
            and t.request_id not in boundary_ids]
    rng.shuffle(pool)
    return pool


def inject_match(view: AccountView, truth: Truth, rng: random.Random, ids: Ids, boundary_ids: set[str],
                 reports: Sequence[str]) -> None:
    """One discrepancy of every exception class, each on its own clean transaction."""
    fam = view.account.family
    pool = _pool(view, rng, boundary_ids)
    by_id = {r.request_id: r for r in view.ledger}
    tag = view.account.account_id

    t = pool.pop()  # the provider never recorded it
    view.report.remove(t)
    truth.expect(fam, reports, "missing_in_report", "NOT_IN_REPORT", t.request_id, "PAYMENT")
    truth.injections.append(f"{tag}: {t.request_id} only in the ledger")

    t = pool.pop()  # the user never recorded it
    view.ledger.remove(by_id[t.request_id])
    truth.expect(fam, reports, "missing_in_ledger", "NOT_IN_LEDGER", t.request_id, "PAYMENT")
    truth.injections.append(f"{tag}: {t.request_id} only in the report")

    t = pool.pop()
    by_id[t.request_id].amount += 100
    truth.expect(fam, reports, "amount_mismatch", "AMOUNT_MISMATCH", t.request_id, "PAYMENT")
    truth.injections.append(f"{tag}: {t.request_id} ledger amount +100 minor units")

    t = pool.pop()
    by_id[t.request_id].currency = "EUR" if t.currency != "EUR" else "USD"
    truth.expect(fam, reports, "currency_mismatch", "CURRENCY_MISMATCH", t.request_id, "PAYMENT")
    truth.injections.append(f"{tag}: {t.request_id} ledger currency changed")

    t = pool.pop()
    by_id[t.request_id].status = "FAILED"
    truth.expect(fam, reports, "status_mismatch", "LEDGER_NOT_SUCCESS", t.request_id, "PAYMENT")
    truth.injections.append(f"{tag}: {t.request_id} ledger says failed, provider says paid")

    t = pool.pop()  # listed twice in the transaction detail file only
    view.dup_in_report.add(t.request_id)
    truth.expect(fam, reports[:1], "duplicate_in_report", "DUPLICATE_KEY", t.request_id, "PAYMENT")
    truth.injections.append(f"{tag}: {t.request_id} listed twice in {reports[0]}")

    t = pool.pop()
    view.ledger.append(replace(by_id[t.request_id]))
    truth.expect(fam, reports, "duplicate_in_ledger", "DUPLICATE_KEY", t.request_id, "PAYMENT")
    truth.injections.append(f"{tag}: {t.request_id} recorded twice in the ledger")

    refunds = [r for r in view.ledger if r.kind == "REFUND" and r.original_request_id]
    r = rng.choice(refunds)
    other = pool.pop()
    r.original_request_id = other.request_id
    truth.expect(fam, reports, "link_mismatch", "REFUND_ORIGINAL_MISMATCH", r.request_id, "REFUND")
    truth.injections.append(f"{tag}: ledger links refund {r.request_id} to the wrong payment")

    # two refunds of 60% each, an hour and a day later: more than the payment, on both sides
    last_day = max(x.day for x in view.report)
    p = next(x for x in pool if (last_day - x.day).days >= 2)
    pool.remove(p)
    for k in (1, 2):
        at = Stamp(p.at.utc + timedelta(hours=1, days=k - 1), 480)
        ref = refund_of(p, (p.amount * 6) // 10, at, ids)
        view.report.append(ref)
        view.ledger.append(_ledger_row(ref))
    truth.expect(fam, reports, "refund_exceeds_payment", "REFUNDS_EXCEED_PAYMENT", p.request_id, "PAYMENT")
    truth.injections.append(f"{tag}: {p.request_id} refunded twice 60%")

    # Negative controls: payments that failed on both sides are not discrepancies (v2 lists them as FAIL).
    for _ in range(2):
        f = pool.pop()
        view.report.remove(f)
        view.failed.append(f)
        by_id[f.request_id].status = "FAILED"
    if view.account.variant == "v2":  # the provider says it failed, the user booked it as paid
        f = pool.pop()
        view.report.remove(f)
        view.failed.append(f)
        truth.expect(fam, reports[:1], "status_mismatch", "REPORT_NOT_SUCCESS", f.request_id, "PAYMENT")
        truth.expect(fam, reports[1:], "missing_in_report", "NOT_IN_REPORT", f.request_id, "PAYMENT")
        truth.injections.append(f"{tag}: {f.request_id} failed at the provider, paid in the ledger")
    view.report.sort(key=lambda x: (x.at.utc, x.request_id))


# ---------------------------------------------------------------------------------------------
# Antom


def _antom_fee(t: Txn) -> int:
    """As written by Antom samples: a payment's fee negative, a refund's fee returned positive."""
    fee = pct(t.settlement, ANTOM_FEE_PCT)
    return -fee if t.kind == "PAYMENT" else fee


def _antom_fees(t: Txn, variant: str) -> dict[str, int]:
    """v1: one total fee. v2: a payment-method fee plus the tax on it (two of the twenty fee columns)."""
    fee = _antom_fee(t)
    if variant == "v1":
        return {"feeAmountValue": fee}
    tax = -pct(fee, ANTOM_TAX_PCT) if fee < 0 else pct(fee, ANTOM_TAX_PCT)
    return {"paymentMethodFeeAmountValue": fee, "taxFeeAmountValue": tax}


def _antom_tx_row(t: Txn, variant: str = "v1", status: str = "SUCCESS") -> dict[str, Any]:
    common = {
        "customerId": t.account.account_id,
        "transactionRequestId": t.request_id,
        "originalTransactionRequestId": t.original.request_id if t.original else None,
        "referenceTransactionId": t.order_id if t.kind == "PAYMENT" else None,
        "orderDescription": t.description or None,
        "transactionType": t.kind,
        "paymentMethodType": "ALIPAY_HK",
        "productCode": "CASHIER_PAYMENT",
        "transactionAmountValue": t.amount,
        "transactionCurrency": t.currency,
    }
    if variant == "v1":
        return {**common, "acquirer": ANTOM_ACQUIRER, "transactionId": t.provider_id,
                "originalTransactionId": t.original.provider_id if t.original else None,
                "pspName": "AlipayHK", "paymentTime": t.at}
    # v2: every event of a payment carries the payment's id (antom.md 7); created a few seconds earlier
    return {**common, "PSP": ANTOM_ACQUIRER, "wallet": "AlipayHK", "status": status,
            "transactionId": (t.original or t).provider_id,
            "transactionCreationTime": Stamp(t.at.utc - timedelta(seconds=3), 480),
            "transactionCompletionTime": t.at if status == "SUCCESS" else None}


def _antom_sd_row(t: Txn, batch: str, settled_at: Stamp, variant: str = "v1") -> dict[str, Any]:
    row = _antom_tx_row(t, variant)
    row.pop("orderDescription")
    row.pop("status", None)
    fees = _antom_fees(t, variant)
    row.update({
        "settlementBatchId": batch,
        "settlementAmountValue": t.settlement + sum(fees.values()),
        "settlementCurrency": t.settlement_currency,
        "quoteCurrencyPair": t.pair,
        "quotePrice": t.rate,
        **fees,
        **{currency_of(name): t.settlement_currency for name in fees},
    })
    if variant == "v1":
        row["settlementTime"] = settled_at
    else:
        row["settlementInitiatedDate"] = settled_at.local.date()  # v2 may write a bare date (antom.md 4)
    return row


def currency_of(fee_column: str) -> str:
    """The currency column of an Antom fee column (antom.md 6.1 / 6.3)."""
    for amount, currency in (*antom.FEES_V1, *antom.FEES_V2):
        if amount == fee_column:
            return currency
    raise KeyError(fee_column)


def _antom_summary(rows: Sequence[dict[str, Any]], batch: str, ccy: str, settled_at: Stamp, customer: str,
                   variant: str = "v1") -> list[dict[str, Any]]:
    fee_columns = ["feeAmountValue"] if variant == "v1" else ["paymentMethodFeeAmountValue", "taxFeeAmountValue"]

    def row(kind: str, subset: Sequence[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"settlementBatchId": batch, "customerId": customer, "summaryType": kind,
                               "count": len(subset), "settlementCurrency": ccy,
                               "settlementAmountValue": sum(r["settlementAmountValue"] for r in subset)}
        for fee in fee_columns:
            out[fee] = sum(r[fee] for r in subset)
            out[currency_of(fee)] = ccy
        if variant == "v1":
            out |= {"acquirer": ANTOM_ACQUIRER, "settlementTime": settled_at}
        else:
            out |= {"PSP": ANTOM_ACQUIRER, "settlementInitiatedDate": settled_at.local.date()}
        return out

    kinds = sorted({r["transactionType"] for r in rows})
    return [row("TOTAL", rows)] + [row(k, [r for r in rows if r["transactionType"] == k]) for k in kinds]


def render_antom(world: World, view: AccountView, rng: random.Random, inject: bool) -> None:
    acc = view.account
    cid = acc.account_id
    spec = world.spec
    truth = world.truth
    variant, fmt = acc.variant, acc.fmt
    base = f"v1/settlements/{cid}"

    def write(report: str, rows: Sequence[dict[str, Any]]) -> bytes:
        return antom.write_report(report, rows, variant=variant, fmt=fmt)

    # Transaction details: one file per transaction day, also on days without transactions. v2 lists the
    # latest status of every transaction, failed ones included (antom.md 1).
    listed = [(t, "SUCCESS") for t in view.report] + ([(t, "FAIL") for t in view.failed] if variant == "v2" else [])
    listed.sort(key=lambda ts: (ts[0].at.utc, ts[0].request_id))
    tx_paths: list[str] = []
    for d in range(spec.days):
        day = spec.start + timedelta(days=d)
        rows = []
        for t, status in listed:
            if t.day == day:
                rows.append(_antom_tx_row(t, variant, status))
                if t.request_id in view.dup_in_report:
                    rows.append(_antom_tx_row(t, variant, status))
        rel = f"{base}/{day:%Y%m%d}/{antom.file_name('transaction_detail', date=day, ext=fmt)}"
        world_write(world, rel, write("transaction_detail", rows), published(day + timedelta(days=1)))
        tx_paths.append(rel)
    # Settlement: per settlement currency, T+2 business days.
    batches: dict[tuple[date, str], list[Txn]] = defaultdict(list)
    for t in view.report:
        batches[(t.settle_date(), t.settlement_currency)].append(t)
    plans = sorted(batches)
    tweak_total = tweak_fee = tweak_row = tweak_name = None
    usd = [p for p in plans if p[1] == "USD"]
    if inject and variant == "v1":
        tweak_total, tweak_fee, tweak_row, tweak_name = usd[0], usd[1], usd[2], plans[-1]
    elif inject:
        tweak_fee = usd[0]
    fee_column = "feeAmountValue" if variant == "v1" else "paymentMethodFeeAmountValue"
    for n, (sdate, ccy) in enumerate(plans):
        batch = f"{sdate:%Y%m%d}{'11' if variant == 'v1' else '22'}021040{n:03d}"
        settled_at = Stamp(world_dt(sdate, 6).astimezone(UTC), 480)
        txns = sorted(batches[(sdate, ccy)], key=lambda x: (x.at.utc, x.request_id))
        rows = [_antom_sd_row(t, batch, settled_at, variant) for t in txns]
        scope = f"{cid}/{ccy}/{batch}"
        if (sdate, ccy) == tweak_row:  # one row does not add up: settlement != gross + fee (AN-5)
            i = next(i for i, r in enumerate(rows) if r["transactionType"] == "PAYMENT")
            rows[i]["settlementAmountValue"] += 100
            line = i + 2
            truth.fail("AN-5", "SD_ROW_ARITHMETIC", f"{scope}/{rows[i]['transactionRequestId']}")
            truth.injections.append(f"antom: settlement detail line {line} of batch {batch} does not add up")
        summary = _antom_summary(rows, batch, ccy, settled_at, cid, variant)
        if (sdate, ccy) == tweak_total:  # the summary disagrees with its rows (AN-1, AN-2)
            summary[0]["settlementAmountValue"] += 100
            pay = next(s for s in summary if s["summaryType"] == "PAYMENT")
            pay["settlementAmountValue"] += 100
            truth.fail("AN-1", "SD_TOTAL_MISMATCH", scope)
            truth.fail("AN-2", "SD_TYPE_MISMATCH", f"{scope}/PAYMENT")
            truth.injections.append(f"antom: summary of batch {batch} states 100 more than its details")
        if (sdate, ccy) == tweak_fee:  # TOTAL fee off: vs details (AN-3) and vs its own type rows (AN-4)
            summary[0][fee_column] -= 7
            truth.fail("AN-3", "SD_FEE_MISMATCH", f"{scope}/fee")
            truth.fail("AN-4", "SS_TOTAL_INCONSISTENT", f"{scope}/fee")
            truth.injections.append(f"antom: TOTAL fee of batch {batch} off by 7")
        name_batch = batch
        if (sdate, ccy) == tweak_name:  # the file name carries another batch id (AN-9)
            name_batch = batch[:-3] + "999"
            truth.fail("AN-9", "NAME_MISMATCH", antom.file_name("settlement_detail", currency=ccy, batch_id=name_batch))
            truth.injections.append(f"antom: settlement details of {batch} named {name_batch}")
        folder = f"{base}/{sdate:%Y%m%d}"
        sd_name = antom.file_name("settlement_detail", currency=ccy, batch_id=name_batch, ext=fmt)
        world_write(world, f"{folder}/{sd_name}", write("settlement_detail", rows), published(sdate))
        ss_name = antom.file_name("settlement_summary", currency=ccy, batch_id=batch, ext=fmt)
        world_write(world, f"{folder}/{ss_name}", write("settlement_summary", summary), published(sdate))
    if inject and fmt == "csv":
        # The same bytes delivered twice, and a truncated re-publication of a day file.
        src = tx_paths[1]
        data = (world.provider / src).read_bytes()
        dup = f"{base}/redelivered/{Path(src).name}"
        world_write(world, dup, data, world.publish[src] + timedelta(days=1))
        truth.duplicate_deliveries.append(dup)
        cut = data[: data.rfind(b"\n", 0, len(data) - 10) + 25]
        bad = f"{base}/partial/{Path(tx_paths[2]).name}"
        world_write(world, bad, cut, world.publish[tx_paths[2]] + timedelta(minutes=30))
        truth.quarantined.append({"path": bad, "code": "truncated_file"})
        truth.injections.append(f"antom: {dup} delivered twice; {bad} truncated")


def world_dt(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), UTC8)


def published(day: date) -> datetime:
    """When a report of ``day`` appears on the provider's SFTP: 08:00 UTC+8 (seed 000; Antom [inferred])."""
    return world_dt(day, 8).astimezone(UTC)


def world_write(world: World, rel: str, data: bytes, publish_at: datetime) -> None:
    path = world.provider / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    world.files.append(rel)
    world.publish[rel] = publish_at


# ---------------------------------------------------------------------------------------------
# Alipay+


def _direction(signed: int) -> str:
    return "CREDIT" if signed > 0 else "DEBIT"


def _tdr_sign(role: str) -> int:
    """Participant perspective: an ACQP receives payments, an MPP pays them (alipayplus.md 2)."""
    return 1 if role == "ACQP" else -1


@dataclass
class _Cycle:
    day: date
    batch: str
    tdr_rows: list[dict[str, Any]]
    fr_rows: list[dict[str, Any]]
    tdr_net: int  # participant perspective, signed
    fr_net: int
    ccy_set: set[str]
    net_txn: int

    @property
    def tsr_net(self) -> int:
        return self.tdr_net + self.fr_net


def _ap_cycle(acc: Account, view: AccountView, day: date) -> _Cycle:
    batch = f"{day:%Y%m%d}" + ("0000200000" if acc.role == "ACQP" else "0000300000")
    sign = _tdr_sign(acc.role)
    tdr: list[dict[str, Any]] = []
    fr: list[dict[str, Any]] = []
    for t in view.report:
        if t.day != day:
            continue
        row = {
            "clearingBatchId": batch, "transactionId": t.provider_id,
            "originalTransactionId": t.original.provider_id if t.original else None,
            "transactionRequestId": t.request_id,
            "originalTransactionRequestId": t.original.request_id if t.original else None,
            "transactionType": t.kind, "transactionTime": t.at,
            "transactionAmountValue": abs(t.amount), "transactionCurrency": t.currency,
            "settlementAmountValue": abs(t.settlement), "settlementCurrency": t.settlement_currency,
            "quoteCurrencyPair": t.pair, "quotePrice": t.rate,
            "pspId": "PSP-" + (acc.account_id if acc.role == "MPP" else "A1234567890"),
            "acquirerId": "ACQ-" + (acc.account_id if acc.role == "ACQP" else "1022ACQP00000001"),
            "referenceMerchantId": "M-" + t.order_id[-4:],
        }
        tdr.append(row)
        if t.request_id in view.dup_in_report:
            tdr.append(dict(row))
        if t.kind == "PAYMENT":
            for ftype, fee in (("INTERCHANGE_FEE", pct(t.settlement, INTERCHANGE_PCT)),
                               ("SERVICE_FEE", pct(t.settlement, SERVICE_PCT))):
                direction = "CREDIT" if (acc.role == "MPP" and ftype == "INTERCHANGE_FEE") else "DEBIT"
                fr.append({"clearingBatchId": batch, "feeId": f"F{t.provider_id[-10:]}{ftype[0]}",
                           "transactionId": t.provider_id, "feeType": ftype, "feeAmountValue": fee,
                           "feeCurrency": acc.settlement_currency, "fundDirection": direction})
    tdr_net = sign * sum((1 if r["transactionType"] == "PAYMENT" else -1) * r["settlementAmountValue"] for r in tdr)
    fr_net = sum((1 if r["fundDirection"] == "CREDIT" else -1) * r["feeAmountValue"] for r in fr)
    ccys = {r["transactionCurrency"] for r in tdr}
    net_txn = sum((1 if r["transactionType"] == "PAYMENT" else -1) * r["transactionAmountValue"] for r in tdr)
    return _Cycle(day, batch, tdr, fr, tdr_net, fr_net, ccys, net_txn)


def render_alipayplus(world: World, view: AccountView, inject: bool) -> None:
    acc = view.account
    pid, ccy, agr = acc.account_id, acc.settlement_currency, acc.agreement_id
    spec = world.spec
    truth = world.truth
    cycles = [_ap_cycle(acc, view, spec.start + timedelta(days=d)) for d in range(spec.days)]
    # Which batch gets which injected fault (ACQP: clearing-side faults; MPP: settlement-side faults).
    faults: dict[str, date] = {}
    if inject and acc.role == "ACQP":
        faults = {"tdr_count": cycles[0].day, "tdr_net": cycles[1].day, "fr_count": cycles[2].day,
                  "tsr_count": cycles[3].day, "name_ccy": cycles[6].day}
    settle_groups: dict[date, list[_Cycle]] = defaultdict(list)
    for c in cycles:
        settle_groups[add_business_days(c.day, 2)].append(c)
    sdates = sorted(settle_groups)
    if inject and acc.role == "MPP":
        multi = next(s for s in sdates if len(settle_groups[s]) > 1)
        single = [s for s in sdates if len(settle_groups[s]) == 1]
        faults = {"tsr_net": settle_groups[multi][0].day, "sr_net": multi, "sr_single": single[0],
                  "unsettled": settle_groups[single[1]][0].day, "twice": settle_groups[single[2]][0].day}
    tsr_nets: dict[str, int] = {}
    for c in cycles:
        scope = f"{pid}/{agr}/{ccy}/{c.batch}"
        gen = c.day + timedelta(days=1)
        folder = f"v1/settlements/clearing/{pid}/{gen:%Y%m%d}"
        single_ccy = next(iter(c.ccy_set)) if len(c.ccy_set) == 1 else None
        tdr_summary: dict[str, Any] = {"totalCount": len(c.tdr_rows), "netSettlementAmountValue": abs(c.tdr_net),
                       "settlementCurrency": ccy, "fundDirection": _direction(c.tdr_net),
                       "netTransactionAmountValue": abs(c.net_txn) if single_ccy else None,
                       "transactionCurrency": single_ccy}
        fr_summary: dict[str, Any] = {"totalCount": len(c.fr_rows), "netFeeAmountValue": abs(c.fr_net),
                                      "feeCurrency": ccy,
                      "fundDirection": _direction(c.fr_net)}
        tsr: dict[str, Any] = {"clearingBatchId": c.batch, "clearingDate": c.day.isoformat(),
               "totalCount": len(c.tdr_rows) + len(c.fr_rows), "fundDirection": _direction(c.tsr_net),
               "settlementCurrency": ccy, "netSettlementAmountValue": abs(c.tsr_net),
               "transactionCurrency": single_ccy, "netTransactionAmountValue": abs(c.net_txn) if single_ccy else None,
               "extendInfo": None}
        tsr_net = c.tsr_net
        if faults.get("tdr_count") == c.day:
            tdr_summary["totalCount"] += 1
            truth.fail("AP-I1", "TDR_COUNT_MISMATCH", scope)
            truth.fail("AP-D1", "TSR_COUNT_MISMATCH", scope)
            truth.injections.append(f"alipayplus: TDR summary of {c.batch} counts one line too many")
        if faults.get("tdr_net") == c.day:
            tdr_summary["netSettlementAmountValue"] += 50
            truth.fail("AP-I2", "TDR_NET_MISMATCH", scope)
            truth.fail("AP-I4", "TSR_NET_MISMATCH", scope)
            truth.injections.append(f"alipayplus: TDR summary net of {c.batch} off by 50")
        if faults.get("fr_count") == c.day:
            fr_summary["totalCount"] += 1
            truth.fail("AP-I3", "FR_COUNT_MISMATCH", scope)
            truth.fail("AP-D1", "TSR_COUNT_MISMATCH", scope)
            truth.injections.append(f"alipayplus: fee summary of {c.batch} counts one fee too many")
        if faults.get("tsr_count") == c.day:
            tsr["totalCount"] += 1
            truth.fail("AP-D1", "TSR_COUNT_MISMATCH", scope)
            truth.injections.append(f"alipayplus: TSR totalCount of {c.batch} off by one")
        if faults.get("tsr_net") == c.day:
            tsr_net += 30 if tsr_net >= 0 else -30
            tsr["netSettlementAmountValue"] = abs(tsr_net)
            tsr["fundDirection"] = _direction(tsr_net)
            truth.fail("AP-I4", "TSR_NET_MISMATCH", scope)
            truth.fail("AP-I5", "SR_BATCH_NET_MISMATCH", None)  # scope filled when the SR is written
            truth.injections.append(f"alipayplus: TSR net of {c.batch} off by 30")
        tsr_nets[c.batch] = c.tsr_net  # the SR settles the true figures
        name_ccy = "JPY" if faults.get("name_ccy") == c.day else ccy
        if name_ccy != ccy:
            fname = alipayplus.file_name("transaction_detail", participant_id=pid, currency=name_ccy,
                                         batch_id=c.batch, agreement_id=agr)
            truth.fail("AP-I8", "NAME_CURRENCY_MISMATCH", fname)
            truth.injections.append(f"alipayplus: {fname} carries {ccy} content")

        def put(report: str, data: bytes, currency: str = ccy, batch: str = c.batch, where: str = folder,
                day: date = gen) -> None:
            name = alipayplus.file_name(report, participant_id=pid, currency=currency, batch_id=batch,
                                        agreement_id=agr)
            world_write(world, f"{where}/{name}", data, published(day))

        put("transaction_detail", alipayplus.write_report("transaction_detail", rows=c.tdr_rows,
                                                          summary=tdr_summary), currency=name_ccy)
        put("fee", alipayplus.write_report("fee", rows=c.fr_rows, summary=fr_summary))
        put("transaction_summary", alipayplus.write_report("transaction_summary", rows=[tsr]))
    # Settlement reports.
    by_day = {c.day: c for c in cycles}
    listed: dict[date, list[_Cycle]] = {s: list(settle_groups[s]) for s in sdates}
    if faults.get("unsettled"):
        for s in sdates:
            listed[s] = [c for c in listed[s] if c.day != faults["unsettled"]]
        batch = by_day[faults["unsettled"]].batch
        truth.fail("AP-I6", "BATCH_NOT_SETTLED", f"{pid}/{agr}/{ccy}/{batch}")
        truth.injections.append(f"alipayplus: clearing batch {batch} is in no settlement report")
    if faults.get("twice"):
        c = by_day[faults["twice"]]
        later = next(s for s in sdates if s > add_business_days(c.day, 2))
        listed[later].append(c)
        truth.fail("AP-I6", "BATCH_SETTLED_TWICE", f"{pid}/{agr}/{ccy}/{c.batch}")
        truth.injections.append(f"alipayplus: clearing batch {c.batch} settled twice")
    for s in sdates:
        sbatch = f"{s:%Y%m%d}" + ("0000900000" if acc.role == "ACQP" else "0000800000")
        sscope = f"{pid}/{agr}/{ccy}/{sbatch}"
        details = []
        for c in sorted(listed[s], key=lambda x: x.day):
            net = tsr_nets[c.batch]
            details.append({"clearingBatchId": c.batch, "clearingDate": c.day.isoformat(),
                            "netSettlementAmountValue": abs(net), "settlementCurrency": ccy,
                            "fundDirection": _direction(net)})
            if faults.get("tsr_net") == c.day:
                pending = next(f for f in truth.check_failures if f["reason_code"] == "SR_BATCH_NET_MISMATCH"
                               and f["scope"] is None)
                pending["scope"] = f"{sscope}/{c.batch}"
        total = sum(tsr_nets[c.batch] for c in listed[s])
        if faults.get("sr_single") == s:
            total += 25 if total >= 0 else -25
            details[0]["netSettlementAmountValue"] = abs(total)
            details[0]["fundDirection"] = _direction(total)
            truth.fail("AP-D2", "SR_TSR_MISMATCH", sscope)
            truth.fail("AP-I5", "SR_BATCH_NET_MISMATCH", f"{sscope}/{details[0]['clearingBatchId']}")
            truth.injections.append(f"alipayplus: single-cycle settlement {sbatch} differs from its TSR by 25")
        if faults.get("sr_net") == s:
            total += 40 if total >= 0 else -40
            truth.fail("AP-I5", "SR_NET_MISMATCH", sscope)
            truth.injections.append(f"alipayplus: settlement {sbatch} summary off by 40")
        summary = {"settlementBatchId": sbatch, "participantAgreementId": agr, "settlementCurrency": ccy,
                   "netSettlementAmountValue": abs(total), "fundDirection": _direction(total),
                   "valueDate": s.isoformat(), "totalCount": len(details)}
        name = alipayplus.file_name("settlement", participant_id=pid, currency=ccy, batch_id=sbatch,
                                    agreement_id=agr)
        world_write(world, f"v1/settlements/settlement/{pid}/{s:%Y%m%d}/{name}",
                    alipayplus.write_report("settlement", rows=details, summary=summary), published(s))


# ---------------------------------------------------------------------------------------------
# Ledgers (the users' own records, each in its own column names)


def _write_antom_ledger(world: World, acc: Account, rows: Sequence[LedgerRow]) -> dict[str, Any]:
    """A merchant's order system: major-unit decimals, refunds positive with kind=refund."""
    rel = write_csv_ledger(world.root, "ledgers/antom_merchant_orders.csv",
                           ["order_ref", "kind", "refund_of", "amount", "ccy", "state", "created_at"],
                           ([r.request_id, "sale" if r.kind == "PAYMENT" else "refund", r.original_request_id or "",
                             format_major(abs(r.amount), r.currency), r.currency,
                             "paid" if r.status == "SUCCESS" else "failed", format_timestamp(r.at, "iso")]
                            for r in rows))
    return {"name": "merchant-orders", "path": rel, "family": "antom", "account_id": acc.account_id,
            "amount_unit": "major", "refund_sign": "negate_reverse_types",
            "columns": {"merchant_ref_id": "order_ref", "record_type": "kind", "original_merchant_ref_id": "refund_of",
                        "amount": "amount", "currency": "ccy", "status": "state", "occurred_at": "created_at"},
            "record_types": {"sale": "PAYMENT", "refund": "REFUND"},
            "statuses": {"paid": "SUCCESS", "failed": "FAILED"}}


def _write_shop_ledger(world: World, acc: Account, rows: Sequence[LedgerRow]) -> dict[str, Any]:
    """A shop system's spreadsheet export: xlsx, headers with spaces, signed minor units, ISO times."""
    from ..formats.writer import write_xlsx

    header = ["Payment Request ID", "Type", "Original Request", "Amount (minor)", "Currency", "Status",
              "Completed At"]
    cells = [[r.request_id, r.kind.title(), r.original_request_id or "", str(r.amount), r.currency,
              r.status.title(), format_timestamp(r.at, "iso")] for r in rows]
    rel = "ledgers/shop_orders.xlsx"
    (world.root / rel).parent.mkdir(parents=True, exist_ok=True)
    (world.root / rel).write_bytes(write_xlsx(header, cells, trailer=False))
    return {"name": "shop-orders", "path": rel, "family": "antom", "account_id": acc.account_id,
            "amount_unit": "minor", "refund_sign": "as_written",
            "columns": {"merchant_ref_id": "Payment Request ID", "record_type": "Type",
                        "original_merchant_ref_id": "Original Request", "amount": "Amount (minor)",
                        "currency": "Currency", "status": "Status", "occurred_at": "Completed At"}}


def _write_acqp_ledger(world: World, acc: Account, rows: Sequence[LedgerRow]) -> dict[str, Any]:
    """An acquirer's switch log: minor units, signed, UTC+8 plain timestamps."""
    rel = write_csv_ledger(world.root, f"ledgers/acqp_{acc.account_id}.csv",
                           ["paymentRequestId", "txnType", "originalPaymentRequestId", "amountMinor", "currency",
                            "status", "transactionTime"],
                           ([r.request_id, r.kind, r.original_request_id or "", str(r.amount), r.currency, r.status,
                             format_timestamp(r.at, "plain")] for r in rows))
    return {"name": "acqp-switch", "path": rel, "family": "alipayplus", "account_id": acc.account_id,
            "amount_unit": "minor", "refund_sign": "as_written",
            "columns": {"merchant_ref_id": "paymentRequestId", "record_type": "txnType",
                        "original_merchant_ref_id": "originalPaymentRequestId", "amount": "amountMinor",
                        "currency": "currency", "status": "status", "occurred_at": "transactionTime"}}


def _write_mpp_ledger(world: World, acc: Account, rows: Sequence[LedgerRow]) -> dict[str, Any]:
    """A wallet's data warehouse export: Parquet, integer minor units, timestamps with time zone."""
    table = pa.table({
        "request_id": pa.array([r.request_id for r in rows], pa.string()),
        "type": pa.array([r.kind.lower() for r in rows], pa.string()),
        "orig_request_id": pa.array([r.original_request_id for r in rows], pa.string()),
        "amount_minor": pa.array([r.amount for r in rows], pa.int64()),
        "currency": pa.array([r.currency for r in rows], pa.string()),
        "status": pa.array([r.status for r in rows], pa.string()),
        "ts": pa.array([r.at.utc for r in rows], pa.timestamp("us", tz="UTC")),
    })
    rel = f"ledgers/mpp_{acc.account_id}.parquet"
    (world.root / rel).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, world.root / rel)
    return {"name": "wallet-dwh", "path": rel, "family": "alipayplus", "account_id": acc.account_id,
            "amount_unit": "minor", "refund_sign": "as_written",
            "columns": {"merchant_ref_id": "request_id", "record_type": "type",
                        "original_merchant_ref_id": "orig_request_id", "amount": "amount_minor",
                        "currency": "currency", "status": "status", "occurred_at": "ts"}}


# ---------------------------------------------------------------------------------------------


def _account_view(world: World, acc: Account, rng: random.Random, ids: Ids) -> AccountView:
    """An account's transactions with their fees, its boundary payments noted, the match faults injected."""
    spec = world.spec
    txns = generate_txns(acc, spec, rng, ids)
    for t in txns:
        if acc.family == "antom":
            t.fee = _antom_fee(t)
        elif acc.family == "alipay_cn":
            t.fee = cn_fee(t)
        elif t.kind == "PAYMENT":
            t.interchange_fee = pct(t.settlement, INTERCHANGE_PCT)
            t.service_fee = pct(t.settlement, SERVICE_PCT)
    view = AccountView(acc, list(txns), [_ledger_row(t) for t in txns])
    boundary = [t for t in txns if t.at.utc.astimezone(UTC8).time().isoformat() in ("23:59:59.999000", "00:00:00")]
    for t in boundary:
        world.truth.boundaries.append({"family": acc.family, "account_id": acc.account_id,
                                       "merchant_ref_id": t.request_id, "clearing_date": t.day.isoformat(),
                                       "occurred_at": t.at.isoformat()})
    if spec.inject:
        inject_match(view, world.truth, rng, ids, {t.request_id for t in boundary}, MATCH_REPORTS[acc.family])
    return view


def build_world(root: Path, spec: WorldSpec | None = None) -> World:
    """Generate the world under ``root``: ``provider/`` (SFTP trees), ``ledgers/``, ``truth.json``."""
    spec = spec or WorldSpec()
    if spec.inject and (spec.days < MIN_INJECT_DAYS or spec.payments_per_day < MIN_INJECT_PAYMENTS):
        # every fault needs its own clean payment and the settlement faults a week of batches
        raise ValueError(f"injecting every fault needs at least {MIN_INJECT_DAYS} days and "
                         f"{MIN_INJECT_PAYMENTS} payments a day; use WorldSpec(inject=False) for a smaller world")
    root = Path(root)
    world = World(spec=spec, root=root)
    rng = random.Random(spec.seed)
    ids = Ids()
    for acc in ACCOUNTS:
        view = _account_view(world, acc, rng, ids)
        if acc.family == "antom":
            render_antom(world, view, rng, spec.inject)
            writer = _write_antom_ledger if acc.variant == "v1" else _write_shop_ledger
        else:
            render_alipayplus(world, view, spec.inject)
            writer = _write_acqp_ledger if acc.role == "ACQP" else _write_mpp_ledger
        world.ledgers.append(writer(world, acc, view.ledger))
    # Alipay China: bills behind the open-platform gateway, not on SFTP (world_cn.py). Generated last, so the
    # other accounts' random draws are those of a world without it.
    view = _account_view(world, CN_MERCHANT, rng, ids)
    days = [spec.start + timedelta(days=d) for d in range(spec.days)]
    faults = BillFaults(days[1], days[2], days[3]) if spec.inject else BillFaults()
    for failure in render_alipay_cn(root, CN_MERCHANT, view.report, view.dup_in_report, days, rng, faults):
        world.truth.fail(failure["check_id"], failure["reason_code"], failure["scope"])
    world.ledgers.append(write_cn_ledger(root, CN_MERCHANT, view.ledger))
    truth = world.truth
    truth.exceptions.sort(key=lambda e: (e["family"], e["report"], e["exception_class"], e["match_key"]))
    truth.check_failures.sort(key=lambda c: (c["check_id"], c["reason_code"], c["scope"] or ""))
    (root / "publish.json").write_text(json.dumps(
        {rel: at.isoformat() for rel, at in sorted(world.publish.items())}, indent=1) + "\n", encoding="utf-8")
    (root / "truth.json").write_text(json.dumps({
        "seed": spec.seed, "start": spec.start.isoformat(), "days": spec.days,
        "accounts": [{"family": a.family, "account_id": a.account_id, "role": a.role,
                      "settlement_currency": a.settlement_currency, "agreement_id": a.agreement_id}
                     for a in (*ACCOUNTS, CN_MERCHANT)],
        "ledgers": world.ledgers,
        "exceptions": truth.exceptions, "check_failures": truth.check_failures,
        "duplicate_deliveries": truth.duplicate_deliveries, "quarantined": truth.quarantined,
        "boundaries": truth.boundaries, "injections": truth.injections,
    }, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return world
