"""Workspace configuration (``alirecon.toml``), validated with pydantic.

Why: many provider facts are inferred (antom.md 9 amount unit, alipayplus.md 6.5 column names); each
is a setting here so a user can correct it without touching code. Secrets are never stored in this
file (later sources read them from files or the environment).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field

from .formats.engine import ParseOptions

__all__ = ["AccountConfig", "LedgerConfig", "ParseConfig", "ReconcileConfig", "WorkspaceConfig"]

CONFIG_NAME = "alirecon.toml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParseConfig(_Model):
    max_line_bytes: int = Field(1024 * 1024, ge=256)
    max_problems: int = Field(200, ge=1)
    # ISO 4217 exponents the provider deviates from, e.g. {"IDR": 2}
    exponent_overrides: dict[str, int] = Field(default_factory=dict)
    # "family.report" -> "major" | "minor" (Antom's amount unit is contradictory: antom.md section 9)
    amount_units: dict[str, Literal["major", "minor"]] = Field(default_factory=dict)
    # "family.report" -> {documented column: [header names this provider uses instead]}
    aliases: dict[str, dict[str, list[str]]] = Field(default_factory=dict)

    def to_options(self, *, keep_extras: bool = True) -> ParseOptions:
        return ParseOptions(
            max_line_bytes=self.max_line_bytes,
            max_problems=self.max_problems,
            exponents=dict(self.exponent_overrides),
            amount_units=dict(self.amount_units),
            aliases={k: {c: list(v) for c, v in m.items()} for k, m in self.aliases.items()},
            keep_extras=keep_extras,
        )


class LedgerConfig(_Model):
    """How to read the user's own records: any column names, mapped onto LedgerLine fields."""

    # LedgerLine field -> the user's column name. ``amount``/``settlement``/``fee`` name money columns;
    # ``currency`` the currency column used for all of them unless ``settlement_currency`` etc. are set.
    columns: dict[str, str] = Field(
        default_factory=lambda: {
            "merchant_ref_id": "merchant_ref_id",
            "record_type": "record_type",
            "amount": "amount",
            "currency": "currency",
            "status": "status",
            "original_merchant_ref_id": "original_merchant_ref_id",
            "occurred_at": "occurred_at",
        }
    )
    amount_unit: Literal["major", "minor"] = "major"
    # the user's values -> canonical record types / statuses (case-insensitive); unmapped values are upper-cased
    record_types: dict[str, str] = Field(default_factory=dict)
    statuses: dict[str, str] = Field(default_factory=dict)
    default_offset_minutes: int = 480
    csv_delimiter: str = ","


class ReconcileConfig(_Model):
    # family -> reports whose lines are matched against the ledger
    match_reports: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "antom": ["transaction_detail", "settlement_detail"],
            "alipayplus": ["transaction_detail"],
        }
    )
    # family -> the canonical field that identifies a record on both sides
    match_key: dict[str, str] = Field(
        default_factory=lambda: {"antom": "merchant_ref_id", "alipayplus": "merchant_ref_id"}
    )
    # report statuses that count as "the provider took the money" (v2 transaction details carry status)
    success_statuses: list[str] = Field(default_factory=lambda: ["SUCCESS"])


class AccountConfig(_Model):
    """One set of identifiers at a provider (credentials come with the fetch issue, never stored here)."""

    name: str
    family: Literal["alipayplus", "antom", "barcode", "alipay_cn"]
    account_id: str  # participantId (Alipay+), merchantIdByAcquirer/customerId (Antom)
    role: Literal["MPP", "ACQP", "MERCHANT"] = "MERCHANT"
    settlement_currencies: list[str] = Field(default_factory=list)


class DuckDBConfig(_Model):
    memory_limit: str | None = None
    threads: int | None = None


class WorkspaceConfig(_Model):
    version: int = 1
    parse: ParseConfig = Field(default_factory=ParseConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    accounts: list[AccountConfig] = Field(default_factory=list)
    duckdb: DuckDBConfig = Field(default_factory=DuckDBConfig)

    @classmethod
    def load(cls, path: Path) -> WorkspaceConfig:
        with open(path, "rb") as f:
            return cls.model_validate(tomllib.load(f))

    def dump(self, path: Path) -> None:
        data = self.model_dump(mode="json", exclude_none=True)
        Path(path).write_bytes(tomli_w.dumps(data).encode("utf-8"))

    def role_of(self, family: str, account_id: str | None) -> str | None:
        for acc in self.accounts:
            if acc.family == family and acc.account_id == account_id:
                return acc.role
        return None
