"""Time as the providers define it.

Why: Alipay+ clearing cycles run [00:00, 24:00) UTC+8 (alipayplus.md section 8) and a payment at
23:59:59.999 belongs to a different day than one at 00:00:00. Timestamps are kept in UTC together
with the offset they were written in, so a line can be shown exactly as the provider wrote it and
bucketed exactly as the provider buckets it.

One regular expression (``TIMESTAMP_RE``) is shared by the Python parser here and the vectorised SQL
parser in ``formats.engine`` so that both accept exactly the same texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone

__all__ = [
    "DATE_RE",
    "TIMESTAMP_RE",
    "UTC8",
    "Stamp",
    "TimeError",
    "add_business_days",
    "clearing_date",
    "cycle_bounds",
    "parse_compact_date",
    "parse_date",
    "parse_timestamp",
]

UTC8 = timezone(timedelta(hours=8), "UTC+08:00")
UTC8_MINUTES = 8 * 60

# ISO 8601 date + time, 'T' or a space between them (Antom acquirer samples use a space), optional
# fraction (up to 9 digits, truncated to microseconds), optional offset: Z, +hh:mm or +hhmm
# (+08:30 appears in Antom samples). Without an offset the default (UTC+8) applies.
# Groups: 1 date, 2 hour, 3 minute, 4 second, 5 fraction, 6 offset.
TIMESTAMP_RE = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])"
    r"(?:\.([0-9]{1,9}))?(Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?"
)
DATE_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
_TIMESTAMP = re.compile(TIMESTAMP_RE)
_DATE = re.compile(DATE_RE)
_COMPACT_DATE = re.compile(r"[0-9]{8}")


class TimeError(ValueError):
    """A timestamp or date that is not well formed or does not exist (``2023-02-30``)."""

    code = "bad_date"


@dataclass(frozen=True, slots=True)
class Stamp:
    """An instant in UTC plus the UTC offset (minutes) its source text was written in."""

    utc: datetime
    offset_minutes: int

    def __post_init__(self) -> None:
        if self.utc.tzinfo is None or self.utc.utcoffset() != timedelta(0):
            raise ValueError("Stamp.utc must be an aware UTC datetime")

    @property
    def local(self) -> datetime:
        """The instant as written (in its original offset)."""
        return self.utc.astimezone(timezone(timedelta(minutes=self.offset_minutes)))

    def isoformat(self) -> str:
        return self.local.isoformat()


def _offset_minutes(text: str | None, default: int) -> int:
    if text is None:
        return default
    if text == "Z":
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return sign * (int(digits[:2]) * 60 + int(digits[2:]))


def parse_timestamp(text: str, *, default_offset_minutes: int = UTC8_MINUTES) -> Stamp:
    """Parse ``2018-12-25T10:00:00+08:30``, ``2023-01-09 02:45:29+08:00``, ``2022-04-19 23:59:59``.

    A value without an offset is taken in ``default_offset_minutes`` (UTC+8 unless the format says
    otherwise). Fractions beyond microseconds are truncated, never rounded into the next second.
    """
    m = _TIMESTAMP.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise TimeError(f"not an ISO 8601 timestamp: {text!r}")
    day_text, hh, mm, ss, frac, off = m.groups()
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        raise TimeError(f"no such date: {text!r}") from None
    micro = int((frac or "").ljust(6, "0")[:6])
    offset = _offset_minutes(off, default_offset_minutes)
    local = datetime.combine(day, time(int(hh), int(mm), int(ss), micro), timezone(timedelta(minutes=offset)))
    return Stamp(local.astimezone(UTC), offset)


def parse_date(text: str) -> date:
    """Parse ``yyyy-MM-dd`` strictly."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise TimeError(f"not a yyyy-MM-dd date: {text!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise TimeError(f"no such date: {text!r}") from None


def parse_compact_date(text: str) -> date:
    """Parse ``yyyyMMdd`` (directory and file-name dates)."""
    if not isinstance(text, str) or not _COMPACT_DATE.fullmatch(text):
        raise TimeError(f"not a yyyyMMdd date: {text!r}")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise TimeError(f"no such date: {text!r}") from None


def clearing_date(instant: datetime | Stamp) -> date:
    """The UTC+8 day (clearing cycle) an instant belongs to: [00:00, 24:00) UTC+8."""
    utc = instant.utc if isinstance(instant, Stamp) else instant
    if utc.tzinfo is None:
        raise ValueError("clearing_date needs an aware datetime")
    return utc.astimezone(UTC8).date()


def cycle_bounds(day: date) -> tuple[datetime, datetime]:
    """UTC start (inclusive) and end (exclusive) of the clearing cycle of ``day``."""
    start = datetime.combine(day, time(0), UTC8).astimezone(UTC)
    return start, start + timedelta(days=1)


def add_business_days(day: date, n: int, holidays: Iterable[date] = ()) -> date:
    """``day`` + ``n`` business days (Mon-Fri, not in ``holidays``); settlement is T+2 by default."""
    off = set(holidays)
    current = day
    remaining = n
    while remaining > 0:
        current += timedelta(days=1)
        if current.weekday() < 5 and current not in off:
            remaining -= 1
    return current
