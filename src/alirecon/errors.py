"""Typed errors for bad input, each naming file, line and column.

Why: a finance team must be able to open the exact file at the exact line and see what was wrong.
Parsers collect these as values (a file may have several problems) and the file is quarantined with
them; ``raise`` is for callers that want to stop on the first one.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["AlireconError", "ConfigError", "FormatError", "WithProblems", "problem_class"]


class AlireconError(Exception):
    """Base of every error alirecon raises on purpose."""


class ConfigError(AlireconError):
    """A workspace or command-line configuration that cannot be used."""


_BY_CODE: dict[str, type[FormatError]] = {}


class FormatError(AlireconError):
    """A problem in an input file at a precise place.

    ``line`` is the 1-based physical line of the file (for xlsx: the sheet row), ``column`` the header
    name where one applies and ``column_index`` its 1-based position. ``severity`` is ``error`` (the
    file is quarantined) or ``warning`` (kept, reported).
    """

    code: ClassVar[str] = "format_error"
    severity_default: ClassVar[str] = "error"

    def __init__(
        self,
        message: str,
        *,
        file: str,
        line: int | None = None,
        column: str | None = None,
        column_index: int | None = None,
        expected: str | None = None,
        found: str | None = None,
        severity: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.column_index = column_index
        self.expected = expected
        self.found = found
        self.severity = severity or self.severity_default
        super().__init__(str(self))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _BY_CODE[cls.code] = cls

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.column_index is not None:
            where += f" column {self.column_index}"
            if self.column:
                where += f" ({self.column})"
        elif self.column:
            where += f" column {self.column}"
        return f"{where}: {self.code}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "column_index": self.column_index,
            "expected": self.expected,
            "found": self.found,
            "message": self.message,
        }

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line or 0, self.column_index or 0, self.code)


class WithProblems:
    """A parse result that carries its problems: ``ok`` when none of them is an error."""

    problems: list[FormatError]

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[FormatError]:
        return [p for p in self.problems if p.severity == "error"]


def problem_class(code: str) -> type[FormatError]:
    """The FormatError subclass for ``code`` (generic FormatError for an unknown code)."""
    return _BY_CODE.get(code, FormatError)


def _define(name: str, code: str, doc: str, severity: str = "error") -> type[FormatError]:
    cls = type(name, (FormatError,), {"code": code, "severity_default": severity, "__doc__": doc})
    return cls


EmptyFile = _define("EmptyFile", "empty_file", "The file has no bytes, or no header line.")
TruncatedFile = _define("TruncatedFile", "truncated_file", "The file ends in the middle of a record.")
MissingTrailer = _define("MissingTrailer", "missing_trailer", "The required <END> line is missing.")
ContentAfterTrailer = _define("ContentAfterTrailer", "content_after_trailer", "Lines follow the <END> line.")
MissingColumn = _define("MissingColumn", "missing_column", "A required column is not in the header.")
DuplicateColumn = _define("DuplicateColumn", "duplicate_column", "A column name appears twice in the header.")
EmptyHeaderCell = _define("EmptyHeaderCell", "empty_header_cell", "A header cell has no name.")
WrongColumnCount = _define(
    "WrongColumnCount", "wrong_column_count", "A record has more or fewer cells than the header."
)
BadNumber = _define("BadNumber", "bad_number", "A cell that must hold a number does not.")
UnknownCurrency = _define("UnknownCurrency", "unknown_currency", "Not an ISO 4217 currency code.")
TooManyDecimals = _define(
    "TooManyDecimals", "too_many_decimals", "More decimals than the currency's ISO 4217 exponent."
)
BadDate = _define("BadDate", "bad_date", "Not a valid date or timestamp in the expected format.")
BadValue = _define("BadValue", "bad_value", "A value outside the allowed set where a rule depends on it.")
TooLong = _define("TooLong", "too_long", "A value longer than the column's documented maximum length.")
MissingValue = _define("MissingValue", "missing_value", "A mandatory cell is empty.")
BadEncoding = _define("BadEncoding", "bad_encoding", "Bytes that are not valid in the file's encoding.")
FormulaCell = _define(
    "FormulaCell", "formula_cell", "A cell that a spreadsheet would run as a formula (=, @, +cmd, -cmd)."
)
LineTooLong = _define("LineTooLong", "line_too_long", "A line longer than the configured maximum.")
BadQuoting = _define("BadQuoting", "bad_quoting", "A quote that is not closed or a stray quote.")
NameMismatch = _define(
    "NameMismatch", "name_mismatch", "The file name says one thing (currency, batch) and the content another."
)
BadFileName = _define("BadFileName", "bad_file_name", "The file name does not follow the report's pattern.")
UnknownFormat = _define("UnknownFormat", "unknown_format", "No known report format recognises the file.")
BadSection = _define("BadSection", "bad_section", "A section is missing, repeated or out of place.")
UnknownValue = _define(
    "UnknownValue", "unknown_value", "An enum value not in the documented list (kept).", "warning"
)
SurplusTrailingCell = _define(
    "SurplusTrailingCell", "surplus_trailing_cell", "One extra empty cell at the end of a record.", "warning"
)
BadColumnType = _define(
    "BadColumnType", "bad_column_type", "A typed (Parquet) column that cannot hold its values exactly: money as float."
)
