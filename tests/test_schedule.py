"""The schedule: which reports each account should receive, for which day, and by when (alipayplus.md 9, antom.md 1).

The expected values are written out by hand from the specs' rules, for a week with a weekend and a holiday.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alirecon import errors
from alirecon.config import AccountConfig, AccountScheduleConfig, ScheduleConfig, SftpConfig, WorkspaceConfig
from alirecon.schedule import ExpectedReport, cycles_settled_on, expected_reports, is_business_day

MON, SUN = date(2026, 11, 2), date(2026, 11, 8)
HOLIDAY = date(2026, 11, 4)  # a Wednesday
WEEK = ScheduleConfig(holidays=[HOLIDAY])
D = date.fromisoformat


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rows(expected: list[ExpectedReport]) -> list[tuple[str, str | None, date, date, datetime, tuple[date, ...]]]:
    return [(e.report, e.currency, e.day, e.directory_date, e.due_at, e.cycles) for e in expected]


def acqp(**kwargs: object) -> AccountConfig:
    return AccountConfig.model_validate({"name": "acqp", "family": "alipayplus", "account_id": "1022ACQP00000001",
                                         "role": "ACQP", "settlement_currencies": ["USD"], **kwargs})


def antom(**kwargs: object) -> AccountConfig:
    return AccountConfig.model_validate({"name": "shop", "family": "antom", "account_id": "1022188000000000001",
                                         "settlement_currencies": ["USD", "JPY"], **kwargs})


# cycle T -> (directory T+1, due T+1 08:00 UTC+8 = T+1 00:00 UTC): every day, the holiday and the weekend too
CLEARING_WEEK = [
    (D("2026-11-02"), D("2026-11-03"), utc("2026-11-03T00:00")),
    (D("2026-11-03"), D("2026-11-04"), utc("2026-11-04T00:00")),
    (D("2026-11-04"), D("2026-11-05"), utc("2026-11-05T00:00")),
    (D("2026-11-05"), D("2026-11-06"), utc("2026-11-06T00:00")),
    (D("2026-11-06"), D("2026-11-07"), utc("2026-11-07T00:00")),
    (D("2026-11-07"), D("2026-11-08"), utc("2026-11-08T00:00")),
    (D("2026-11-08"), D("2026-11-09"), utc("2026-11-09T00:00")),
]
# settlement date S (T+2 business days; Wednesday is a holiday) -> the cycles it settles; due S 08:00 UTC+8
SETTLEMENTS_WEEK = [
    (D("2026-11-05"), (D("2026-11-02"),)),  # Mon + Tue + (Wed off) + Thu
    (D("2026-11-06"), (D("2026-11-03"), D("2026-11-04"))),  # Tuesday and the holiday settle together
    (D("2026-11-09"), (D("2026-11-05"),)),  # Thursday skips the weekend
    (D("2026-11-10"), (D("2026-11-06"), D("2026-11-07"), D("2026-11-08"))),  # Friday + the weekend
]


def test_alipayplus_week_with_a_weekend_and_a_holiday() -> None:
    got = rows(expected_reports(acqp(), WEEK, MON, SUN))
    clearing = [(report, "USD", t, directory, due, (t,)) for t, directory, due in CLEARING_WEEK
                for report in ("fee", "transaction_detail", "transaction_summary")]
    settlement = [("settlement", "USD", s, s, datetime.combine(s, time(0), UTC), cycles)
                  for s, cycles in SETTLEMENTS_WEEK]
    assert got == sorted(clearing + settlement, key=lambda r: (r[2], r[0]))
    assert len(got) == 7 * 3 + 4
    # no settlement report on the holiday or the weekend
    assert not {D("2026-11-04"), D("2026-11-07"), D("2026-11-08")} & {r[2] for r in got if r[0] == "settlement"}


def test_antom_week_transaction_details_daily_settlements_per_currency() -> None:
    got = rows(expected_reports(antom(), WEEK, MON, SUN))
    details = [("transaction_detail", None, t, t, due, (t,)) for t, _, due in CLEARING_WEEK]  # directory = T
    settlement = [(report, ccy, s, s, datetime.combine(s, time(0), UTC), cycles) for s, cycles in SETTLEMENTS_WEEK
                  for report in ("settlement_detail", "settlement_summary") for ccy in ("JPY", "USD")]
    assert got == sorted(details + settlement, key=lambda r: (r[2], r[0], r[1] or ""))
    assert len(got) == 7 + 4 * 2 * 2


def test_a_contract_lag_and_calendar_per_account() -> None:
    """T+1 business days plus the account's own holiday on Friday: Thursday and Friday settle on Monday."""
    account = acqp(schedule={"settlement_lag_business_days": 1, "holidays": ["2026-11-06"],
                             "reports": ["settlement"]})
    got = [(e.day, e.cycles) for e in expected_reports(account, WEEK, MON, SUN)]
    assert got == [
        (D("2026-11-03"), (D("2026-11-02"),)),
        (D("2026-11-05"), (D("2026-11-03"), D("2026-11-04"))),
        (D("2026-11-09"), (D("2026-11-05"), D("2026-11-06"), D("2026-11-07"), D("2026-11-08"))),
    ]


def test_every_settlement_currency_gets_its_own_set() -> None:
    got = expected_reports(acqp(settlement_currencies=["USD", "EUR", "USD"]), WEEK, MON, MON)
    assert [(e.day, e.report, e.currency) for e in got] == [
        (MON, "fee", "EUR"), (MON, "fee", "USD"),
        (MON, "transaction_detail", "EUR"), (MON, "transaction_detail", "USD"),
        (MON, "transaction_summary", "EUR"), (MON, "transaction_summary", "USD"),
        (D("2026-11-05"), "settlement", "EUR"), (D("2026-11-05"), "settlement", "USD")]
    # no settlement currency configured: one set, any currency fits
    assert {e.currency for e in expected_reports(acqp(settlement_currencies=[]), WEEK, MON, SUN)} == {None}


def test_alipayplus_sandbox_is_due_at_the_first_hourly_run_of_its_directory_day() -> None:
    sftp = SftpConfig(host="127.0.0.1", username="u", password_env="PW", environment="sandbox")
    got = {(e.report, e.day): (e.directory_date, e.due_at) for e in expected_reports(acqp(sftp=sftp), WEEK, MON, SUN)}
    # 01:00 UTC+8 on the directory day = 17:00 UTC the day before
    assert got[("transaction_detail", D("2026-11-07"))] == (D("2026-11-08"), utc("2026-11-07T17:00"))
    assert got[("settlement", D("2026-11-10"))] == (D("2026-11-10"), utc("2026-11-09T17:00"))


def test_publish_time_is_a_setting() -> None:
    config = ScheduleConfig(alipayplus_publish_time=time(9, 30), antom_publish_time=time(6, 0))
    (tdr,) = (e for e in expected_reports(acqp(), config, MON, MON) if e.report == "transaction_detail")
    (txn,) = expected_reports(antom(schedule={"reports": ["transaction_detail"]}), config, MON, MON)
    assert tdr.due_at == utc("2026-11-03T01:30")
    assert txn.due_at == utc("2026-11-02T22:00")


def test_unknown_report_and_undocumented_families() -> None:
    with pytest.raises(errors.ConfigError, match="no schedule for alipayplus report"):
        expected_reports(acqp(schedule={"reports": ["settlement_detail"]}), WEEK, MON, SUN)
    barcode = AccountConfig(name="b", family="barcode", account_id="2088")
    assert expected_reports(barcode, WEEK, MON, SUN) == []
    assert expected_reports(acqp(), WEEK, SUN, MON) == []


def test_no_settlement_on_days_off() -> None:
    assert cycles_settled_on(D("2026-11-07"), 2) == ()  # Saturday
    assert cycles_settled_on(HOLIDAY, 2, [HOLIDAY]) == ()
    assert cycles_settled_on(HOLIDAY, 2) == (D("2026-11-02"),)  # an ordinary Wednesday
    assert not is_business_day(HOLIDAY, [HOLIDAY]) and is_business_day(HOLIDAY)


def test_schedule_settings_survive_the_config_file(tmp_path: Path) -> None:
    config = WorkspaceConfig(schedule=WEEK.model_copy(update={"grace_minutes": 30}),
                             accounts=[acqp(schedule=AccountScheduleConfig(settlement_lag_business_days=3))])
    config.dump(tmp_path / "alirecon.toml")
    assert WorkspaceConfig.load(tmp_path / "alirecon.toml") == config


@given(offs=st.sets(st.integers(0, 59), max_size=25), lag=st.integers(1, 4), start=st.integers(0, 30),
       span=st.integers(0, 20))
def test_every_cycle_is_settled_exactly_once_on_the_right_business_day(offs: set[int], lag: int, start: int,
                                                                       span: int) -> None:
    """Brute force: S is the first day with ``lag`` business days in (T, S]; every cycle is settled once."""
    base = date(2026, 12, 1)
    holidays = [base + timedelta(days=o) for o in offs]
    since = base + timedelta(days=start)
    until = since + timedelta(days=span)
    account = acqp(schedule={"settlement_lag_business_days": lag, "reports": ["settlement"]})
    got = expected_reports(account, ScheduleConfig(holidays=holidays), since, until)
    settled: dict[date, date] = {}
    for e in got:
        assert e.day.weekday() < 5 and e.day not in holidays
        for t in e.cycles:
            assert t not in settled
            settled[t] = e.day
    for t in (since + timedelta(days=i) for i in range(span + 1)):
        s, counted = t, 0
        while counted < lag:
            s += timedelta(days=1)
            counted += s.weekday() < 5 and s not in holidays
        assert settled[t] == s
