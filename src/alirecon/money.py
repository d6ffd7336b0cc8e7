"""Exact money: integer minor units plus an ISO 4217 currency.

Why: every report family writes amounts differently (Alipay+ in minor units, Antom and Alipay China
in major-unit decimals) and a single cent lost to a float is a reconciliation failure. Amounts are
parsed from text with ``decimal`` and stored as ``int``; nothing here ever touches ``float``.

Exponents come from the maintained ``iso4217`` package (JPY 0, USD 2, KWD/BHD 3, CLF 4). A user whose
provider deviates from ISO 4217 for one currency can override it through ``exponent_overrides`` in the
workspace configuration (the parse functions accept an ``exponents`` mapping).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache

import iso4217

__all__ = [
    "Money",
    "MoneyError",
    "all_exponents",
    "exponent",
    "format_major",
    "parse_major",
    "parse_minor",
]

_MAJOR = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_MAJOR_THOUSANDS = re.compile(r"[+-]?[0-9]{1,3}(?:,[0-9]{3})*(?:\.[0-9]+)?")
_MINOR = re.compile(r"[+-]?[0-9]+")
_CODE = re.compile(r"[A-Z]{3}")


class MoneyError(ValueError):
    """A money value or currency that cannot be taken exactly.

    ``code`` is one of: ``unknown_currency``, ``bad_number``, ``too_many_decimals``.
    """

    def __init__(self, code: str, message: str, *, found: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.found = found


@cache
def _iso_exponents() -> dict[str, int]:
    table: dict[str, int] = {}
    for cur in iso4217.Currency:
        exp = cur.exponent
        if exp is not None:  # funds/precious metals (XAU, XDR...) have no minor unit and are not money here
            table[cur.code] = int(exp)
    return table


def all_exponents(overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every known currency code with its exponent, overrides applied (used to build SQL lookups)."""
    table = dict(_iso_exponents())
    if overrides:
        table.update({code.upper(): int(exp) for code, exp in overrides.items()})
    return table


def exponent(currency: str, overrides: Mapping[str, int] | None = None) -> int:
    """The number of minor-unit digits of ``currency``; raises ``MoneyError`` for an unknown code."""
    if overrides and currency in overrides:
        return int(overrides[currency])
    if not isinstance(currency, str) or not _CODE.fullmatch(currency):
        raise MoneyError("unknown_currency", f"not an ISO 4217 currency code: {currency!r}", found=currency)
    try:
        return _iso_exponents()[currency]
    except KeyError:
        raise MoneyError("unknown_currency", f"unknown ISO 4217 currency: {currency!r}", found=currency) from None


def parse_major(
    text: str,
    currency: str,
    *,
    thousands: bool = False,
    exponents: Mapping[str, int] | None = None,
) -> int:
    """Parse a major-unit decimal string (``"12.30"``) into minor units (``1230``) exactly.

    Rejected: NaN/Infinity, exponents (``1e5``), whitespace, ``.5`` / ``5.``, thousands separators
    unless ``thousands`` is set (for formats that explicitly use them), and more decimals than the
    currency allows (``"1.5"`` JPY, ``"12.300"`` USD) - a value that needs rounding is an error.
    """
    exp = exponent(currency, exponents)
    pattern = _MAJOR_THOUSANDS if thousands else _MAJOR
    if not isinstance(text, str) or not pattern.fullmatch(text):
        raise MoneyError("bad_number", f"not a decimal amount: {text!r}", found=str(text))
    plain = text.replace(",", "") if thousands else text
    decimals = len(plain.partition(".")[2])
    if decimals > exp:
        raise MoneyError(
            "too_many_decimals",
            f"{text!r} has {decimals} decimals but {currency} allows {exp}",
            found=text,
        )
    return int(Decimal(plain).scaleb(exp))


def parse_minor(text: str, currency: str, *, exponents: Mapping[str, int] | None = None) -> int:
    """Parse an integer already in minor units (Alipay+ ``...AmountValue`` columns)."""
    exponent(currency, exponents)  # validates the currency
    if not isinstance(text, str) or not _MINOR.fullmatch(text):
        raise MoneyError("bad_number", f"not an integer amount in minor units: {text!r}", found=str(text))
    return int(text)


def format_major(minor: int, currency: str, *, exponents: Mapping[str, int] | None = None) -> str:
    """Render minor units as the major-unit decimal string with exactly the currency's decimals."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor units must be int, got {type(minor).__name__}")
    exp = exponent(currency, exponents)
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(exp + 1, "0")
    if exp == 0:
        return sign + digits
    return f"{sign}{digits[:-exp]}.{digits[-exp:]}"


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in integer minor units of one currency. Arithmetic refuses to mix currencies."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise TypeError(f"Money.minor must be int, got {type(self.minor).__name__}")
        exponent(self.currency)

    @classmethod
    def parse(cls, text: str, currency: str, *, thousands: bool = False) -> Money:
        return cls(parse_major(text, currency, thousands=thousands), currency)

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @property
    def exponent(self) -> int:
        return exponent(self.currency)

    def major(self) -> str:
        return format_major(self.minor, self.currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise MoneyError(
                "currency_mismatch", f"cannot combine {self.currency} with {other.currency}"
            )

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __str__(self) -> str:
        return f"{self.major()} {self.currency}"
