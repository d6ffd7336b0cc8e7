"""Which reports each account should receive, for which day, and by when.

Why: providers delete reports after 7 days (seed 000, antom.md 2.1) and nothing announces a report that
never came, so alirecon has to know what *should* be on the server to notice what is not.

The rules (every inferred one is a ``config.ScheduleConfig`` setting naming its source):

- Alipay+ clearing reports of cycle T (transaction_detail, transaction_summary, fee; one set per settlement
  currency, alipayplus.md 11 AP-D6): generated T+1 at 08:00 UTC+8 every day including holidays, in the
  directory dated T+1 (seed 000; alipayplus.md 3: the directory date is the generation date).
- Alipay+ settlement report: generated at 08:00 UTC+8 on the settlement date S = T + 2 business days by
  default (contract-configurable), only on business days; one report settles every cycle whose settlement
  date is S, so after a weekend or holiday it covers several (alipayplus.md 9).
- Antom transaction details of T: T+1 (antom.md 1) at 08:00 UTC+8 [inferred], directory dated T (antom.md 3).
- Antom settlement details + summary per settlement currency on the settlement date S [inferred: T+2
  business days], directory dated S (antom.md 3).
- Alipay+ sandbox environment: reports generated every hour, directory T+1 (seed 000); a report is due at
  the first hourly run of its directory's day [inferred].
- Alipay China daily bills of T (业务明细 + 汇总 for ``trade``, 账务明细 + 汇总 for ``signcustomer``): "normally
  ready before 09:00 the next day" (alipay-cn.md 2.3), so due T+1 at ``openapi.daily_ready_time``; only the
  bill types the account fetches. With ``openapi.monthly``, the monthly bills of month M too, due on
  ``openapi.monthly_ready_day`` of M+1 at ``daily_ready_time`` (2.3: "normally generated on the 3rd", 1.1: by the
  4th), expected in a window that overlaps M: the months the fetch asks for (fetch.openapi_periods).
- Barcode B1 transaction detail of T (``ALIPAY_TRANSACTION_DETAIL_<cur>_<T>.csv``, barcode.md 3: "schedule
  daily"), directory dated T [inferred from the name], due T+1 at ``schedule.barcode_publish_time`` [inferred
  from family A: 09:00-10:00 on T+1, barcode.md 2.1]. Opt-in (``[accounts.schedule] reports``): which file family
  a barcode merchant receives is per merchant (barcode.md 1), and its settlement day is not documented for B1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from . import errors
from .clock import UTC8, add_business_days
from .config import AccountConfig, ScheduleConfig

__all__ = [
    "BILL_TYPE_REPORTS",
    "CYCLE_REPORTS",
    "SETTLEMENT_REPORTS",
    "AccountSchedule",
    "ExpectedReport",
    "account_schedule",
    "cycles_settled_on",
    "expected_reports",
    "is_business_day",
    "monthly_bills_in",
]

# family -> reports produced once per cycle (Alipay+ clearing cycle, Antom transaction day)
CYCLE_REPORTS: dict[str, tuple[str, ...]] = {
    "alipayplus": ("transaction_detail", "transaction_summary", "fee"),
    "antom": ("transaction_detail",),
    "alipay_cn": ("trade_detail", "trade_summary", "account_detail", "account_summary"),
    "barcode": ("transaction_detail",),
}
# Alipay China bill_type -> the reports its zip holds (alipay-cn.md 4)
BILL_TYPE_REPORTS: dict[str, tuple[str, ...]] = {"trade": ("trade_detail", "trade_summary"),
                                                 "signcustomer": ("account_detail", "account_summary")}
# family -> reports produced once per settlement date and settlement currency
SETTLEMENT_REPORTS: dict[str, tuple[str, ...]] = {
    "alipayplus": ("settlement",),
    "antom": ("settlement_detail", "settlement_summary"),
}
# Reports of T generated on T+1 (seed 000 for Alipay+, antom.md 1 for Antom transaction details).
CYCLE_LAG = timedelta(days=1)
ALIPAY_CN_READY = time(9, 0)  # alipay-cn.md 2.3 (an account without [openapi] settings: ingested by hand)


def is_business_day(day: date, holidays: Iterable[date] = ()) -> bool:
    """Monday to Friday and not a listed holiday (alipayplus.md 9: "Common Business Days")."""
    return day.weekday() < 5 and day not in set(holidays)


def cycles_settled_on(day: date, lag: int, holidays: Iterable[date] = ()) -> tuple[date, ...]:
    """The cycles whose settlement date (T + ``lag`` business days) is ``day``, oldest first.

    Empty on a weekend or holiday; several after one (a Tuesday settles Friday, Saturday and Sunday at T+2).
    """
    off = frozenset(holidays)
    if lag < 1 or not is_business_day(day, off):
        return ()
    cycles: list[date] = []
    cycle = day - timedelta(days=1)
    # the settlement date never decreases with the cycle, so walk back until it falls before ``day``
    while (settles := add_business_days(cycle, lag, off)) >= day:
        if settles == day:
            cycles.append(cycle)
        cycle -= timedelta(days=1)
    return tuple(reversed(cycles))


@dataclass(frozen=True)
class ExpectedReport:
    """One report an account should receive.

    ``day``: the cycle T (per-cycle reports) or the settlement date S (settlement reports); ``cycles``: the
    cycles it covers. ``currency``: the settlement currency, None when one file holds every currency (Antom
    transaction details) or the account lists no settlement currency (then any currency fits).
    ``due_at``: when the provider generates it (aware UTC). ``period``: ``monthly`` for an Alipay China monthly
    bill, whose ``day`` is the month's first day and ``cycles`` its days.
    """

    account: str
    day: date
    report: str
    currency: str | None
    family: str
    account_id: str
    directory_date: date
    due_at: datetime
    cycles: tuple[date, ...]
    period: str = "daily"

    def sort_key(self) -> tuple[str, date, str, str, str]:
        return self.account, self.day, self.period, self.report, self.currency or ""

    @property
    def label(self) -> str:
        """The date as a person reads it: the day, or ``yyyy-MM (month)`` for a monthly bill."""
        return f"{self.day:%Y-%m} (month)" if self.period == "monthly" else self.day.isoformat()

    @property
    def per_settlement(self) -> bool:
        return self.report in SETTLEMENT_REPORTS.get(self.family, ())

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account, "family": self.family, "account_id": self.account_id, "report": self.report,
            "date": self.day.isoformat(), "currency": self.currency,
            "directory_date": self.directory_date.isoformat(), "due_at": self.due_at.isoformat(),
            "cycles": [c.isoformat() for c in self.cycles], "period": self.period,
        }


@dataclass(frozen=True)
class AccountSchedule:
    """The rules in force for one account: the workspace's ``[schedule]`` with the account's exceptions."""

    account: AccountConfig
    environment: str  # production | sandbox (from the account's sftp settings)
    reports: tuple[str, ...]
    holidays: frozenset[date]
    settlement_lag: int
    publish_time: time
    sandbox_interval: timedelta

    def settlement_date(self, cycle: date) -> date:
        return add_business_days(cycle, self.settlement_lag, self.holidays)

    def directory_date(self, report: str, day: date) -> date:
        """The ``<date>`` of the remote directory: Alipay+ clearing files sit under their generation day T+1
        (alipayplus.md 3), everything else under its own date (antom.md 3; the SR under S)."""
        if self.account.family == "alipayplus" and report in CYCLE_REPORTS["alipayplus"]:
            return day + CYCLE_LAG
        return day

    def day_of_directory(self, report: str, directory_date: date) -> date:
        """The inverse of ``directory_date``: which cycle or settlement date a directory's report is about."""
        if self.account.family == "alipayplus" and report in CYCLE_REPORTS["alipayplus"]:
            return directory_date - CYCLE_LAG
        return directory_date

    def due_at(self, report: str, day: date) -> datetime:
        """When the report of ``day`` (cycle T or settlement date S) is generated, in UTC."""
        family = self.account.family
        if family == "alipayplus" and self.environment == "sandbox":
            start = datetime.combine(self.directory_date(report, day), time(0), UTC8)
            return (start + self.sandbox_interval).astimezone(UTC)
        generated_on = day + CYCLE_LAG if report in CYCLE_REPORTS.get(family, ()) else day
        return datetime.combine(generated_on, self.publish_time, UTC8).astimezone(UTC)


def account_schedule(account: AccountConfig, config: ScheduleConfig) -> AccountSchedule:
    """Merge the workspace settings with the account's own; an unknown report name is a ConfigError."""
    family = account.family
    known = CYCLE_REPORTS.get(family, ()) + SETTLEMENT_REPORTS.get(family, ())
    own = account.schedule
    if family == "alipay_cn" and account.openapi is not None:  # the bills it asks for
        known = tuple(r for t in account.openapi.bill_types for r in BILL_TYPE_REPORTS.get(t, ()))
    default = () if family == "barcode" else known  # barcode: opt-in (module docstring)
    reports = tuple(own.reports) if own is not None and own.reports is not None else default
    unknown = [r for r in reports if r not in known]
    if unknown:
        raise errors.ConfigError(f"account {account.name!r}: no schedule for {family} report(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(known) or 'none'}")
    antom = family == "antom"  # only Alipay+ and Antom have schedules; other families expect nothing
    lag = config.antom_settlement_lag_business_days if antom else config.alipayplus_settlement_lag_business_days
    if own is not None and own.settlement_lag_business_days is not None:
        lag = own.settlement_lag_business_days
    return AccountSchedule(
        account=account,
        environment=account.sftp.environment if account.sftp is not None else "production",
        reports=reports,
        holidays=frozenset(config.holidays) | frozenset(own.holidays if own is not None else ()),
        settlement_lag=lag,
        publish_time=(config.antom_publish_time if antom else account.openapi.daily_ready_time
                      if family == "alipay_cn" and account.openapi is not None else ALIPAY_CN_READY
                      if family == "alipay_cn" else config.barcode_publish_time if family == "barcode"
                      else config.alipayplus_publish_time),
        sandbox_interval=timedelta(minutes=config.sandbox_interval_minutes),
    )


def expected_reports(account: AccountConfig, config: ScheduleConfig, since: date, until: date) -> list[ExpectedReport]:
    """Every report ``account`` should receive for the cycles ``since``..``until`` (inclusive): the per-cycle
    reports of those days and the settlement reports that settle any of them. Sorted by date, report, currency.
    """
    if until < since:
        return []
    rules = account_schedule(account, config)
    family = account.family
    currencies: list[str | None] = list(dict.fromkeys(account.settlement_currencies)) or [None]
    out: list[ExpectedReport] = []

    def add(report: str, day: date, currency: str | None, cycles: tuple[date, ...]) -> None:
        out.append(ExpectedReport(account.name, day, report, currency, family, account.account_id,
                                  rules.directory_date(report, day), rules.due_at(report, day), cycles))

    for report in (r for r in rules.reports if r in CYCLE_REPORTS.get(family, ())):
        # Antom transaction details: one file per day for every currency (antom.md 3)
        per_currency = currencies if family == "alipayplus" else [None]
        day = since
        while day <= until:
            for currency in per_currency:
                add(report, day, currency, (day,))
            day += timedelta(days=1)
    settlement_reports = [r for r in rules.reports if r in SETTLEMENT_REPORTS.get(family, ())]
    if settlement_reports:
        day, last = rules.settlement_date(since), rules.settlement_date(until)
        while day <= last:
            cycles = cycles_settled_on(day, rules.settlement_lag, rules.holidays)
            if cycles:
                for report in settlement_reports:
                    for currency in currencies:
                        add(report, day, currency, cycles)
            day += timedelta(days=1)
    openapi = account.openapi if family == "alipay_cn" else None
    if openapi is not None and openapi.monthly:
        monthly = [r for r in rules.reports if r in CYCLE_REPORTS["alipay_cn"]]
        for first in monthly_bills_in(since, until):
            days = tuple(first + timedelta(days=n) for n in range((_next_month(first) - first).days))
            due = datetime.combine(_next_month(first).replace(day=openapi.monthly_ready_day),
                                   openapi.daily_ready_time, UTC8).astimezone(UTC)
            out.extend(ExpectedReport(account.name, first, report, None, family, account.account_id, first, due,
                                      days, "monthly") for report in monthly)
    out.sort(key=ExpectedReport.sort_key)
    return out


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def monthly_bills_in(since: date, until: date) -> list[date]:
    """First days of the months whose monthly bill belongs to the window ``since``..``until``: the months that
    overlap it, as the fetch asks for them (a window that no longer touches a month neither fetches nor expects
    its bill: widen it with --since)."""
    months = [date(since.year, since.month, 1)]
    while (nxt := _next_month(months[-1])) <= until:
        months.append(nxt)
    return months
