"""Money: exact parsing, the ISO 4217 exponents, and agreement between the Python and SQL parsers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alirecon.formats.engine import Column, Kind, Layout, compile_layout, convert_rows
from alirecon.money import Money, MoneyError, exponent, format_major, parse_major, parse_minor


@pytest.mark.parametrize(("ccy", "exp"), [("JPY", 0), ("KRW", 0), ("USD", 2), ("EUR", 2), ("KWD", 3), ("BHD", 3),
                                          ("CLF", 4)])
def test_exponents_come_from_iso4217(ccy: str, exp: int) -> None:
    assert exponent(ccy) == exp


@pytest.mark.parametrize(
    ("text", "ccy", "minor"),
    [("12.30", "USD", 1230), ("12.3", "USD", 1230), ("12", "USD", 1200), ("-0.01", "USD", -1), ("+5", "JPY", 5),
     ("1.234", "KWD", 1234), ("0", "JPY", 0), ("007.50", "EUR", 750), ("99999999999999.99", "USD", 9999999999999999)],
)
def test_parse_major_exact(text: str, ccy: str, minor: int) -> None:
    assert parse_major(text, ccy) == minor


@pytest.mark.parametrize(
    ("text", "ccy", "code"),
    [("1.5", "JPY", "too_many_decimals"), ("12.300", "USD", "too_many_decimals"),
     ("1.2345", "KWD", "too_many_decimals"),
     ("NaN", "USD", "bad_number"), ("inf", "USD", "bad_number"), ("1e5", "USD", "bad_number"),
     ("1,000.00", "USD", "bad_number"), (" 12", "USD", "bad_number"),
     (".5", "USD", "bad_number"),
     ("5.", "USD", "bad_number"), ("", "USD", "bad_number"), ("١٢", "USD", "bad_number"),
     ("1.00", "XYZ", "unknown_currency"), ("1.00", "usd", "unknown_currency"), ("1", "XAU", "unknown_currency")],
)
def test_parse_major_rejects(text: str, ccy: str, code: str) -> None:
    with pytest.raises(MoneyError) as exc:
        parse_major(text, ccy)
    assert exc.value.code == code


def test_thousands_only_when_the_format_has_them() -> None:
    assert parse_major("1,234,567.89", "USD", thousands=True) == 123456789
    with pytest.raises(MoneyError):
        parse_major("1,23.00", "USD", thousands=True)


def test_minor_units_and_overrides() -> None:
    assert parse_minor("1960", "EUR") == 1960
    with pytest.raises(MoneyError):
        parse_minor("19.60", "EUR")
    assert parse_major("1.50", "IDR", exponents={"IDR": 2}) == 150


def test_money_arithmetic_refuses_mixed_currencies() -> None:
    a = Money.parse("1.10", "USD")
    assert (a + Money(5, "USD")).minor == 115
    assert str(-a) == "-1.10 USD"
    with pytest.raises(MoneyError):
        _ = a + Money(1, "EUR")
    with pytest.raises(TypeError):
        Money(1.5, "USD")  # type: ignore[arg-type]


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["JPY", "USD", "KWD", "CLF"]))
def test_format_then_parse_round_trips(minor: int, ccy: str) -> None:
    assert parse_major(format_major(minor, ccy), ccy) == minor


_AMOUNT_TEXT = st.one_of(
    st.decimals(min_value=Decimal("-1e12"), max_value=Decimal("1e12"), allow_nan=False, allow_infinity=False,
                places=4).map(lambda d: format(d.normalize(), "f")),
    st.from_regex(r"[+-]?[0-9]{1,6}(\.[0-9]{0,5})?", fullmatch=True),
    st.sampled_from(["1e3", "NaN", "1,000", " 1", "--1", "0x10", ""]),
)


@given(st.lists(st.tuples(_AMOUNT_TEXT, st.sampled_from(["JPY", "USD", "KWD"])), min_size=1, max_size=20))
def test_sql_parser_agrees_with_python(con, cases: list[tuple[str, str]]) -> None:
    """The vectorised parser used for files must accept and convert exactly what money.parse_major does."""
    layout = Layout("t", (Column("a", Kind.AMOUNT, currency=("c",)), Column("c", Kind.CURRENCY)),
                    outputs={"amount_minor": "{a}"}, keep_extras=False)
    compiled = compile_layout(layout, ["a", "c"])
    body = convert_rows(con, [(i + 2, [t or None, c]) for i, (t, c) in enumerate(cases)], compiled, 2)
    got = con.execute(f"SELECT amount_minor, __bad FROM {body.table} ORDER BY __line").fetchall()
    for (text, ccy), (minor, bad) in zip(cases, got, strict=True):
        if text == "":
            assert bad is None and minor is None
            continue
        try:
            expected = parse_major(text, ccy)
        except MoneyError:
            assert bad is not None, (text, ccy)
        else:
            assert bad is None and minor == expected, (text, ccy, minor)
