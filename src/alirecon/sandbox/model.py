"""The synthetic provider world: accounts, payments and refunds, as the provider and the user see them.

Why: every test and the demo need data whose truth is known. The world is generated from a seed, then
discrepancies are injected on purpose into one side (the provider's files or the user's ledger) and
each injection is written down in a truth file together with what alirecon must report for it.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

from ..clock import UTC8, Stamp, add_business_days
from ..money import exponent

__all__ = ["Account", "Txn", "WorldSpec", "convert", "generate_txns"]


@dataclass(frozen=True)
class WorldSpec:
    seed: int = 42
    start: date = date(2026, 11, 2)  # a Monday, so the week has a weekend and multi-batch settlements
    days: int = 7
    payments_per_day: int = 10
    inject: bool = True


@dataclass(frozen=True)
class Account:
    family: str  # antom | alipayplus | alipay_cn
    account_id: str  # customerId / participantId
    role: str  # MERCHANT | ACQP | MPP
    settlement_currency: str
    currencies: tuple[str, ...]  # transaction currencies
    agreement_id: str = ""  # Alipay+ participantAgreementId
    # transactions in these currencies settle in their own currency (Antom: a JPY contract)
    own_settlement: tuple[str, ...] = ()
    quiet_days: tuple[int, ...] = ()  # day indexes without any transaction (empty cycles)
    variant: str = "v1"  # Antom schema generation of the account's reports
    fmt: str = "csv"  # Antom file format: csv | xlsx


# Indicative FX rates: 1 unit of the key currency in USD / EUR.
_RATES = {
    ("JPY", "USD"): Decimal("0.0067"),
    ("KWD", "USD"): Decimal("3.2573"),
    ("EUR", "USD"): Decimal("1.0815"),
    ("USD", "EUR"): Decimal("0.9246"),
    ("JPY", "EUR"): Decimal("0.0062"),
    ("KWD", "EUR"): Decimal("3.0117"),
}


def convert(minor: int, ccy: str, to: str, rate: Decimal) -> int:
    """``minor`` of ``ccy`` in ``to`` at ``rate`` (``ccy/to`` pair, multiply), half-even to ``to``'s unit."""
    major = Decimal(minor).scaleb(-exponent(ccy)) * rate
    return int(major.scaleb(exponent(to)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def pct(minor: int, percent: Decimal) -> int:
    return int((Decimal(abs(minor)) * percent / 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@dataclass
class Txn:
    """One successful (or, in the ledger only, failed) payment or refund, as the provider knows it."""

    account: Account
    kind: str  # PAYMENT | REFUND
    request_id: str  # the merchant's / participant's request id: the match key
    provider_id: str  # paymentId / refundId / transactionId
    order_id: str
    amount: int  # signed minor units: refunds negative
    currency: str
    at: Stamp
    settlement_currency: str
    rate: Decimal | None
    settlement: int  # signed, in settlement_currency, before fees
    fee: int = 0  # Antom: as written (payment fee negative); Alipay+: interchange + service magnitudes
    interchange_fee: int = 0
    service_fee: int = 0
    original: Txn | None = None
    ledger_status: str = "SUCCESS"
    description: str = ""

    @property
    def day(self) -> date:
        return self.at.utc.astimezone(UTC8).date()

    @property
    def pair(self) -> str | None:
        return f"{self.currency}/{self.settlement_currency}" if self.rate is not None else None

    def settle_date(self) -> date:
        return add_business_days(self.day, 2)


@dataclass
class Ids:
    """Deterministic identifier factory."""

    counters: dict[str, int] = field(default_factory=dict)

    def next(self, prefix: str, width: int = 6) -> str:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        return f"{prefix}{n:0{width}d}"


_AMOUNT_RANGES = {0: (100, 60000), 2: (100, 60000), 3: (100, 180000)}
_DESCRIPTIONS = ["Coffee, large", 'Book "Ledgers"', "Gift card\nline 2", "Tea", "Noodles", "Snacks", ""]


def _stamp(day: date, seconds: int, micro: int = 0) -> Stamp:
    local = datetime.combine(day, time(0), UTC8) + timedelta(seconds=seconds, microseconds=micro)
    return Stamp(local.astimezone(UTC), 480)


def _make(acc: Account, rng: random.Random, ids: Ids, day: date, at: Stamp | None = None,
          currency: str | None = None) -> Txn:
    ccy = currency or rng.choice(acc.currencies)
    lo, hi = _AMOUNT_RANGES[exponent(ccy)]
    amount = rng.randint(lo, hi)
    settle_ccy = ccy if ccy in acc.own_settlement or ccy == acc.settlement_currency else acc.settlement_currency
    rate = None if settle_ccy == ccy else _RATES[(ccy, settle_ccy)]
    settlement = amount if rate is None else convert(amount, ccy, settle_ccy, rate)
    prefix = {"antom": "PAYREQ-", "alipayplus": "APRQ-", "alipay_cn": "CNORD-"}[acc.family]
    tag = acc.account_id[-4:]
    return Txn(
        account=acc,
        kind="PAYMENT",
        request_id=ids.next(f"{prefix}{tag}-"),
        provider_id=day.strftime("%Y%m%d") + ids.next(f"1907{tag}", 12),
        order_id=ids.next(f"ORD-{tag}-"),
        amount=amount,
        currency=ccy,
        at=at or _stamp(day, rng.randint(60, 86340), rng.randint(0, 999) * 1000),
        settlement_currency=settle_ccy,
        rate=rate,
        settlement=settlement,
        description=rng.choice(_DESCRIPTIONS),
    )


def refund_of(payment: Txn, amount: int, at: Stamp, ids: Ids) -> Txn:
    """A (partial) refund of ``payment``: negative amounts, the payment's currency and rate."""
    tag = payment.account.account_id[-4:]
    settlement = -amount if payment.rate is None else -convert(amount, payment.currency,
                                                                payment.settlement_currency, payment.rate)
    return replace(
        payment,
        kind="REFUND",
        request_id=ids.next(f"REFREQ-{tag}-"),
        provider_id=at.utc.astimezone(UTC8).strftime("%Y%m%d") + ids.next(f"1908{tag}", 12),
        amount=-amount,
        at=at,
        settlement=settlement,
        original=payment,
        description="",
    )


def generate_txns(acc: Account, spec: WorldSpec, rng: random.Random, ids: Ids) -> list[Txn]:
    """Payments every day (none on quiet days), partial and multiple refunds, two boundary payments."""
    out: list[Txn] = []
    for d in range(spec.days):
        if d in acc.quiet_days:
            continue
        day = spec.start + timedelta(days=d)
        for _ in range(spec.payments_per_day):
            out.append(_make(acc, rng, ids, day))
    # The cycle boundary: one payment at 23:59:59.999 UTC+8 on day 2, one at 00:00:00 on day 3.
    d2 = spec.start + timedelta(days=2)
    out.append(_make(acc, rng, ids, d2, at=_stamp(d2, 86399, 999000)))
    out.append(_make(acc, rng, ids, d2 + timedelta(days=1), at=_stamp(d2 + timedelta(days=1), 0)))
    # Refunds: some payments of the first days get one or two partial refunds later in the week.
    payments = [t for t in out if t.day < spec.start + timedelta(days=spec.days - 2)]
    for p in rng.sample(payments, k=max(2, len(payments) // 8)):
        n = rng.choice([1, 1, 2])
        left = p.amount
        for _ in range(n):
            amt = rng.randint(1, max(1, left // 2))
            left -= amt
            later = p.day + timedelta(days=rng.randint(0, 2))
            at = _stamp(later, rng.randint(60, 86340))
            if at.utc <= p.at.utc:
                at = Stamp(p.at.utc + timedelta(minutes=5), 480)
            out.append(refund_of(p, amt, at, ids))
    out.sort(key=lambda t: (t.at.utc, t.request_id))
    return out


def write_csv_ledger(root: Path, rel: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Write a world ledger as the user's system would export it (UTF-8, LF); return ``rel``."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(header)
    out.writerows(rows)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(buf.getvalue(), encoding="utf-8")
    return rel
