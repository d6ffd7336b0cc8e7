"""Clock: UTC+8 clearing cycles, offsets kept, the 23:59:59.999 / 00:00:00 boundary."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alirecon.clock import (
    TimeError,
    add_business_days,
    clearing_date,
    cycle_bounds,
    parse_compact_date,
    parse_timestamp,
)
from alirecon.formats.writer import format_timestamp


def test_offsets_are_kept_and_utc_is_exact() -> None:
    s = parse_timestamp("2018-12-25T10:00:00+08:30")
    assert s.utc == datetime(2018, 12, 25, 1, 30, tzinfo=UTC)
    assert s.offset_minutes == 510
    assert s.isoformat() == "2018-12-25T10:00:00+08:30"
    assert parse_timestamp("2023-01-09 02:45:29+08:00").utc == datetime(2023, 1, 8, 18, 45, 29, tzinfo=UTC)
    assert parse_timestamp("2023-01-09T02:45:29Z").offset_minutes == 0
    assert parse_timestamp("2023-01-09T02:45:29-0530").offset_minutes == -330


def test_plain_format_is_utc_plus_8() -> None:
    s = parse_timestamp("2022-04-19 23:59:59")
    assert s.offset_minutes == 480
    assert s.utc == datetime(2022, 4, 19, 15, 59, 59, tzinfo=UTC)


def test_cycle_boundary() -> None:
    last = parse_timestamp("2022-04-19 23:59:59.999")
    first = parse_timestamp("2022-04-20 00:00:00")
    assert clearing_date(last) == date(2022, 4, 19)
    assert clearing_date(first) == date(2022, 4, 20)
    start, end = cycle_bounds(date(2022, 4, 19))
    assert start <= last.utc < end <= first.utc


@pytest.mark.parametrize("text", ["2023-02-30 10:00:00", "2023-01-01 24:00:00", "2023-01-01T10:00", "20230101",
                                  "2023-01-01 10:00:00+8", "", "2023-01-01 10:00:60"])
def test_bad_timestamps(text: str) -> None:
    with pytest.raises(TimeError):
        parse_timestamp(text)


def test_compact_dates_and_business_days() -> None:
    assert parse_compact_date("20220319") == date(2022, 3, 19)
    with pytest.raises(TimeError):
        parse_compact_date("20220230")
    friday = date(2026, 11, 20)
    assert add_business_days(friday, 2) == date(2026, 11, 24)
    assert add_business_days(friday, 2, holidays=[date(2026, 11, 23)]) == date(2026, 11, 25)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
       st.sampled_from(["iso", "iso_space", "plain"]))
def test_writer_and_parser_agree(instant: datetime, style: str) -> None:
    instant = instant.replace(microsecond=(instant.microsecond // 1000) * 1000)
    assert parse_timestamp(format_timestamp(instant.astimezone(), style)).utc == instant
