"""Workspace configuration (``alirecon.toml``), validated with pydantic.

Why: many provider facts are inferred (antom.md 9 amount unit, alipayplus.md 6.5 column names); each
is a setting here so a user can correct it without touching code. Secrets are never stored in this
file (later sources read them from files or the environment).
"""

from __future__ import annotations

import re
import string
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal

import tomli_w
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ConfigError
from .formats.engine import ParseOptions

__all__ = ["AccountConfig", "AccountScheduleConfig", "LedgerConfig", "OpenApiConfig", "ParseConfig", "ReconcileConfig",
           "ScheduleConfig", "SftpConfig", "WorkspaceConfig"]

CONFIG_NAME = "alirecon.toml"


class _Model(BaseModel):
    # a secret pasted into the wrong setting (a password where a variable's name belongs) must not be
    # echoed back: validation errors name the setting and the rule, never the value
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ParseConfig(_Model):
    max_line_bytes: int = Field(1024 * 1024, ge=256)
    max_problems: int = Field(200, ge=1)
    # ISO 4217 exponents the provider deviates from, e.g. {"IDR": 2}
    exponent_overrides: dict[str, int] = Field(default_factory=dict)
    # "family.report" -> "major" | "minor" (Antom's amount unit is contradictory: antom.md section 9)
    amount_units: dict[str, Literal["major", "minor"]] = Field(default_factory=dict)
    # "family.report" -> {documented column: [header names this provider uses instead]}
    aliases: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    # "family.report" -> sign of detail amounts: "by_type" (unsigned + type/direction column) | "as_written"
    # (the Alipay+ refund/fee sign convention is undocumented: alipayplus.md 6.5 gap 4)
    amount_signs: dict[str, Literal["by_type", "as_written"]] = Field(default_factory=dict)

    def to_options(self, *, keep_extras: bool = True) -> ParseOptions:
        return ParseOptions(
            max_line_bytes=self.max_line_bytes,
            max_problems=self.max_problems,
            exponents=dict(self.exponent_overrides),
            amount_units=dict(self.amount_units),
            aliases={k: {c: list(v) for c, v in m.items()} for k, m in self.aliases.items()},
            keep_extras=keep_extras,
            amount_signs=dict(self.amount_signs),
        )


# LedgerConfig.columns keys: LedgerLine fields, with money named by its stem (``amount`` -> amount_minor).
LEDGER_TEXT_FIELDS = (
    "family",
    "account_id",
    "record_type",
    "provider_txn_id",
    "merchant_ref_id",
    "order_id",
    "original_provider_txn_id",
    "original_merchant_ref_id",
    "status",
)
LEDGER_MONEY_FIELDS = ("amount", "settlement", "fee")
LEDGER_CURRENCY_FIELDS = ("currency", "settlement_currency", "fee_currency")
LEDGER_COLUMN_FIELDS = (*LEDGER_TEXT_FIELDS, *LEDGER_MONEY_FIELDS, *LEDGER_CURRENCY_FIELDS, "occurred_at")
# Fields that identify a record on both sides, each with the field that links a reverse record (refund) to
# its forward one (antom.md 7: originalTransactionRequestId / originalTransactionId). ``order_id`` has no
# "original" column: a refund carries its payment's order id (referenceTransactionId) [inferred].
MATCH_KEYS = {
    "merchant_ref_id": "original_merchant_ref_id",
    "provider_txn_id": "original_provider_txn_id",
    "order_id": "order_id",
}
MatchKey = Literal["merchant_ref_id", "provider_txn_id", "order_id"]
# alipay_cn: 商户订单号, and a refund's own 退款批次号/请求号 (alipay-cn.md 6.3 #1, #21; formats/alipay_cn.py)
# barcode: merchantTransId (barcode.md 10.4: the payment's idempotency key, in the B1 files as written)
_DEFAULT_MATCH_KEYS: dict[str, MatchKey] = {"antom": "merchant_ref_id", "alipayplus": "merchant_ref_id",
                                            "alipay_cn": "merchant_ref_id", "barcode": "merchant_ref_id"}


class LedgerConfig(_Model):
    """How to read one set of the user's own records: any column names, mapped onto LedgerLine fields."""

    name: str = Field("ledger", min_length=1)
    path: Path | None = None
    # which provider family the rows are reconciled against; a ``family`` column (``columns``) wins per row.
    # Neither: the rows take part in every family's reconciliation.
    family: str | None = None
    account_id: str | None = None  # constant account, unless an ``account_id`` column is mapped
    # LedgerLine field -> the user's column name (see LEDGER_COLUMN_FIELDS). ``amount``/``settlement``/``fee``
    # name money columns; ``currency`` is the currency column of all of them unless ``settlement_currency`` /
    # ``fee_currency`` are mapped. Every mapped column must be in the file's header.
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
    currency: str | None = None  # fixed currency for a ledger without a currency column
    amount_unit: Literal["major", "minor"] = "major"
    # canonical LedgerLine amounts are signed: PAYMENT +, REFUND -. "as_written": the ledger already writes
    # them so; "negate_reverse_types": it writes every amount positive and ``reverse_types`` are negated
    # (amount and settlement; fees are kept as written, their sign differs by provider: antom.md 9).
    refund_sign: Literal["as_written", "negate_reverse_types"] = "as_written"
    reverse_types: list[str] = Field(default_factory=lambda: ["REFUND"])
    # the user's values -> canonical record types / statuses (case-insensitive); unmapped values are upper-cased
    record_types: dict[str, str] = Field(default_factory=dict)
    statuses: dict[str, str] = Field(default_factory=dict)
    default_offset_minutes: int = Field(480, ge=-720, le=840)
    csv_delimiter: str = Field(",", min_length=1, max_length=1)
    null_values: list[str] = Field(default_factory=list)  # cell texts read as empty, e.g. "NULL", "-"

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, columns: dict[str, str]) -> dict[str, str]:
        for fld, header in columns.items():
            if fld not in LEDGER_COLUMN_FIELDS:
                raise ValueError(f"unknown ledger field {fld!r}; known: {', '.join(LEDGER_COLUMN_FIELDS)}")
            # the engine's output templates address columns as {name} and {name:mode}
            if not header or any(ch in header for ch in "{}:"):
                raise ValueError(f"ledger column name for {fld!r} must be non-empty without '{{', '}}' or ':'")
        return columns

    @model_validator(mode="after")
    def _consistent(self) -> LedgerConfig:
        money = [f for f in LEDGER_MONEY_FIELDS if f in self.columns]
        if money and "currency" not in self.columns and self.currency is None:
            raise ValueError("money columns need a 'currency' column or a fixed 'currency'")
        if self.refund_sign == "negate_reverse_types" and "record_type" not in self.columns:
            raise ValueError("refund_sign 'negate_reverse_types' needs a mapped 'record_type' column")
        return self


BillPeriodKind = Literal["daily", "monthly"]
_DAILY_BILLS: dict[str, list[BillPeriodKind]] = {"alipay_cn": ["daily"]}


class ReconcileConfig(_Model):
    # family -> reports whose lines are matched against the ledger
    match_reports: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "antom": ["transaction_detail", "settlement_detail"],
            "alipayplus": ["transaction_detail"],
            "alipay_cn": ["trade_detail"],  # the trade bill (业务明细): one line per trade and refund
            # the Global Open API's transaction detail (B1), whose merchantTransId is what the payment client
            # sends; family A / AlipayHK merchants set ["transaction"] / ["hk_transaction"] (barcode.md 1)
            "barcode": ["transaction_detail"],
        }
    )
    # family -> the canonical field that identifies a record on both sides (antom.md AN-8: the merchant's
    # request id = transactionRequestId)
    match_key: dict[str, MatchKey] = Field(default_factory=lambda: dict(_DEFAULT_MATCH_KEYS))
    # family -> bill periods whose lines are matched (alipay-cn.md 2.3): a monthly bill restates the month's
    # daily bills, so matching both would pair every trade twice. ["monthly"] for a merchant that only
    # downloads monthly bills. Families without an entry match every file.
    match_periods: dict[str, list[BillPeriodKind]] = Field(default_factory=lambda: dict(_DAILY_BILLS))
    # report statuses that count as "the provider took the money" (v2 transaction details carry status)
    success_statuses: list[str] = Field(default_factory=lambda: ["SUCCESS"])
    # family -> record types that take part (absent: all). E.g. Antom settlement details also list
    # SETTLEMENT_FEE / RESERVE rows that no merchant ledger has (antom.md 8).
    match_record_types: dict[str, list[str]] = Field(default_factory=dict)


# -- SFTP (issue 3) -------------------------------------------------------------------------------
# Remote directory templates per family and environment: alipayplus.md 3 (clearing/settlement trees,
# <date> = generation date), antom.md 3 (<date> = transaction or settlement date). Providers customise
# them (antom.md 2.1), so every account may override them.
DEFAULT_DIRECTORIES: dict[tuple[str, str], tuple[str, ...]] = {
    ("alipayplus", "production"): ("/v1/settlements/clearing/{account_id}/{date:%Y%m%d}",
                                   "/v1/settlements/settlement/{account_id}/{date:%Y%m%d}"),
    ("alipayplus", "sandbox"): ("/sandbox/settlements/clearing/{account_id}/{date:%Y%m%d}",
                                "/sandbox/settlements/settlement/{account_id}/{date:%Y%m%d}"),
    ("antom", "production"): ("/v1/settlements/{account_id}/{date:%Y%m%d}",),
    ("antom", "sandbox"): ("/v1/settlements/{account_id}/{date:%Y%m%d}",),  # antom.md names no sandbox tree
    # B1 files (barcode.md 3: /download/<merchantId>/<date>); the docs' example adds an IPAY/ level, so the root is
    # [inferred] and configurable (sftp.directories); no sandbox tree is documented: the same [inferred]
    ("barcode", "production"): ("/download/{account_id}/{date:%Y%m%d}",),
    ("barcode", "sandbox"): ("/download/{account_id}/{date:%Y%m%d}",),
}
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HTTP_URL_RE = re.compile(r"https?://[^\s/?#]+(/[^\s?#]*)?")
_BASE64_KEY_RE = re.compile(r"[A-Za-z0-9+/=\s]+")


def _env_var_name(value: str) -> str:
    if not _ENV_NAME_RE.fullmatch(value):  # a name, never the secret itself
        raise ValueError("must name an environment variable (letters, digits, '_'), not hold the secret")
    return value


def _public_key_text(value: str) -> str:
    if "PRIVATE KEY" in value:
        raise ValueError("holds a private key: never put a private key in the config")
    if not (value.lstrip().startswith("-----BEGIN PUBLIC KEY-----") or _BASE64_KEY_RE.fullmatch(value)):
        raise ValueError("must be a PEM public key or its bare Base64 text")
    return value


def _http_url(value: str) -> str:
    if not _HTTP_URL_RE.fullmatch(value):
        raise ValueError("must be an http(s) URL such as https://openapi.alipay.com/gateway.do")
    return value


EnvVarName = Annotated[str, AfterValidator(_env_var_name)]  # settings that name where a secret is
PublicKeyText = Annotated[str, AfterValidator(_public_key_text)]  # an inline public key (never a private one)
HttpUrl = Annotated[str, AfterValidator(_http_url)]


class SftpConfig(_Model):
    """Where and how to fetch one account's reports over SFTP. Secrets are never stored here: the password
    and the key passphrase are read from the environment variables named below, the key from a file."""

    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    username: str = Field(min_length=1)
    password_env: EnvVarName | None = None  # name of the environment variable holding the password
    key_file: Path | None = None  # private key (relative paths: from the workspace)
    key_passphrase_env: EnvVarName | None = None
    known_hosts: Path | None = None  # default: <workspace>/known_hosts
    # first contact only: record an unknown host key instead of refusing it (a changed key is always refused)
    accept_new_host_key: bool = False
    environment: Literal["production", "sandbox"] = "production"
    # templates with {account_id} and {date:<strftime>}; None: DEFAULT_DIRECTORIES for the family/environment
    directories: list[str] | None = None
    window_days: int = Field(7, ge=0, le=366)  # retention is 7 days (alipayplus.md 9, antom.md 2.1)
    max_parallel: int = Field(4, ge=1, le=64)
    block_size: int | None = Field(None, ge=1024)  # None: the server's advertised read limit (asyncssh default)
    max_requests: int | None = Field(None, ge=1)  # None: asyncssh picks 16-128 from the block size
    timeout: float = Field(30.0, gt=0)  # seconds: connecting, and the longest wait for one read
    retries: int = Field(5, ge=0)  # further attempts after a disconnect or timeout
    backoff_initial: float = Field(1.0, ge=0)  # seconds before the first retry, doubled each time
    backoff_max: float = Field(30.0, ge=0)

    @field_validator("directories")
    @classmethod
    def _templates(cls, value: list[str] | None) -> list[str] | None:
        for template in value or []:
            if not template.startswith("/"):
                raise ValueError(f"directory template {template!r} must be an absolute remote path")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as exc:
                raise ValueError(f"directory template {template!r}: {exc}") from None
            if not fields <= {"account_id", "date"}:
                raise ValueError(f"directory template {template!r} may only use {{account_id}} and {{date:...}}")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> SftpConfig:
        if self.password_env is None and self.key_file is None:
            raise ValueError("sftp needs password_env or key_file")
        return self

    def directory_templates(self, family: str) -> tuple[str, ...]:
        if self.directories is not None:
            return tuple(self.directories)
        try:
            return DEFAULT_DIRECTORIES[(family, self.environment)]
        except KeyError:
            raise ConfigError(f"no default SFTP directories for {family} ({self.environment}); "
                              "set sftp.directories") from None


# -- Alipay China open platform (issue 4): alipay.data.dataservice.bill.downloadurl.query ---------------
# Gateways: alipay-cn.md 2.1 (production from the seed and the official Python SDK; the current sandbox host
# from fzlee/alipay, the old one from the SDK).
ALIPAY_GATEWAY = "https://openapi.alipay.com/gateway.do"
ALIPAY_SANDBOX_GATEWAY = "https://openapi-sandbox.dl.alipaydev.com/gateway.do"
ALIPAY_OLD_SANDBOX_GATEWAY = "https://openapi.alipaydev.com/gateway.do"
_BILL_TYPE_RE = re.compile(r"[A-Za-z_]{1,20}")  # bill_type is string(20) (alipay-cn.md 2.3)


class OpenApiConfig(_Model):
    """How to ask Alipay China's open platform for one account's bills. No secret is stored here: the private
    key comes from a file or the environment variable named below, the app_auth_token from the environment.
    Alipay's public key is public, so it may be written inline."""

    gateway: HttpUrl = ALIPAY_GATEWAY
    app_id: str = Field(min_length=1, max_length=32)  # alipay-cn.md 2.2
    private_key_file: Path | None = None  # PEM (PKCS#1 or PKCS#8) or bare Base64; relative: from the workspace
    private_key_env: EnvVarName | None = None  # name of the environment variable holding the key text
    alipay_public_key_file: Path | None = None
    alipay_public_key: PublicKeyText | None = None  # PEM or bare Base64 (SubjectPublicKeyInfo)
    sign_type: Literal["RSA2", "RSA"] = "RSA2"  # RSA2 = SHA256withRSA, RSA = SHA1withRSA (alipay-cn.md 3.1)
    charset: Literal["utf-8", "gbk", "gb2312"] = "utf-8"
    # ISV / main-account mode: the authorising merchant's token (a secret: only the variable's name is here)
    app_auth_token_env: EnvVarName | None = None
    bill_types: list[str] = Field(default_factory=lambda: ["trade", "signcustomer"])
    monthly: bool = False  # also fetch monthly bills (yyyy-MM)
    # the days a fetch asks for when no --since is given [inferred]: the API serves bills for years (alipay-cn.md
    # 2.3), so nothing forces a window; 7 (as SFTP retention) keeps an hourly run cheap and lets a late bill arrive
    window_days: int = Field(7, ge=1, le=3660)
    smid: str | None = Field(None, min_length=1, max_length=20)  # only with bill_type trade_zft_merchant
    secure: bool = True  # biz_content "secure": "true" asks for an https download link (alipay-cn.md 2.3)
    ca_file: Path | None = None  # extra CA bundle (PEM) for the gateway and the download host
    verify: bool = True  # TLS certificate verification; off only for a local test gateway
    timeout: float = Field(30.0, gt=0)  # seconds per HTTP request (gateway call or bill download)
    retries: int = Field(3, ge=0)  # further attempts after a network error, a 5xx, 20000 or a rate limit
    backoff_initial: float = Field(1.0, ge=0)  # seconds before the first retry, doubled each time
    backoff_max: float = Field(30.0, ge=0)
    # SYSTEM_RATE_LIMIT / USER_RATE_LIMIT: "retry after one minute" (alipay-cn.md 2.5)
    rate_limit_backoff: float = Field(60.0, ge=0)
    url_refreshes: int = Field(2, ge=0)  # fresh download URLs asked for after one expired (30 s: alipay-cn.md 2.4)
    url_validity_seconds: float = Field(30.0, gt=0)
    max_download_bytes: int = Field(1024 * 1024 * 1024, ge=1024)
    # when a bill should exist [inferred]: a day's bill before 09:00 the next day, a month's by the 4th
    # (alipay-cn.md 2.3 and 1.1); "no bill" after that plus the grace is a day without data (2.5 mapping)
    daily_ready_time: time = time(9, 0)
    monthly_ready_day: int = Field(4, ge=1, le=28)
    no_bill_grace_hours: float = Field(24.0, ge=0)

    @field_validator("bill_types")
    @classmethod
    def _bill_types(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("bill_types must name at least one bill type (trade, signcustomer, ...)")
        for bill_type in value:
            if not _BILL_TYPE_RE.fullmatch(bill_type):
                raise ValueError(f"bill type {bill_type!r} must be 1-20 letters or '_' (e.g. trade, signcustomer)")
        if len(set(value)) != len(value):
            raise ValueError("bill_types lists a bill type twice")
        return value

    @model_validator(mode="after")
    def _one_of_each(self) -> OpenApiConfig:
        if (self.private_key_file is None) == (self.private_key_env is None):
            raise ValueError("openapi needs exactly one of private_key_file or private_key_env")
        if (self.alipay_public_key_file is None) == (self.alipay_public_key is None):
            raise ValueError("openapi needs exactly one of alipay_public_key_file or alipay_public_key")
        return self


# -- Schedule (issue 3): when each report should arrive and how long the server keeps it (schedule.py,
# status.py). Several facts are inferred, so each is a setting that names the spec fact it rests on.
class ScheduleConfig(_Model):
    """When the providers generate each report. Times of day are UTC+8, the providers' clock (alipayplus.md 8)."""

    # Common Business Days = Monday-Friday minus these dates. No provider publishes its calendar
    # (alipayplus.md 9: settlements and the SR only on business days), so the user lists the holidays.
    holidays: list[date] = Field(default_factory=list)
    # Alipay+ clearing files of cycle T: generated T+1 at 08:00, every day including holidays (seed 000)
    alipayplus_publish_time: time = time(8, 0)
    # Alipay+ settlement date: T+2 business days by default, set by contract (alipayplus.md 9)
    alipayplus_settlement_lag_business_days: int = Field(2, ge=1)
    # Antom transaction details of T: on T+1 (antom.md 1) [inferred: the hour is not documented; as Alipay+]
    antom_publish_time: time = time(8, 0)
    # Antom settlement details + summary on the settlement date [inferred: antom.md gives no lag; as Alipay+]
    antom_settlement_lag_business_days: int = Field(2, ge=1)
    # Barcode B1 transaction detail of T: on T+1 [inferred: B1 says "daily"; family A files appear 09:00-10:00
    # on T+1, barcode.md 2.1]
    barcode_publish_time: time = time(9, 0)
    # Alipay+ sandbox environment: reports generated every hour (seed 000); a report is due at the first
    # run of its directory's day [inferred]
    sandbox_interval_minutes: int = Field(60, ge=1)
    # a report not arrived by its due time + grace is late
    grace_minutes: int = Field(120, ge=0)
    # files older than 7 days may be removed from the server (seed 000, antom.md 2.1)
    retention_days: int = Field(7, ge=1)
    # a file listed on the server but not fetched is at risk this many days before its removal
    # (seed 000 advises downloading within 3 of the 7 days)
    at_risk_days: int = Field(2, ge=0)


class AccountScheduleConfig(_Model):
    """One account's exceptions to ``ScheduleConfig``: its contract's settlement lag and calendar, its reports."""

    settlement_lag_business_days: int | None = Field(None, ge=1)
    holidays: list[date] = Field(default_factory=list)  # in addition to the workspace's
    # the reports this account receives (default: all of its family's, schedule.CYCLE_REPORTS and
    # SETTLEMENT_REPORTS); e.g. APO transaction details may be on the Dashboard only (antom.md 1)
    reports: list[str] | None = None


class AccountConfig(_Model):
    """One set of identifiers at a provider (credentials come with the fetch issue, never stored here)."""

    name: str
    family: Literal["alipayplus", "antom", "barcode", "alipay_cn"]
    account_id: str  # participantId (Alipay+), merchantIdByAcquirer/customerId (Antom)
    role: Literal["MPP", "ACQP", "MERCHANT"] = "MERCHANT"
    settlement_currencies: list[str] = Field(default_factory=list)
    sftp: SftpConfig | None = None  # where to fetch this account's reports (alirecon fetch)
    openapi: OpenApiConfig | None = None  # Alipay China open-platform bill download (issue 4)
    schedule: AccountScheduleConfig | None = None  # exceptions to the workspace's [schedule]


class DuckDBConfig(_Model):
    memory_limit: str | None = None
    threads: int | None = None


class ChecksConfig(_Model):
    # AN-5 per-row tolerance in minor units: Antom's FX rounding rule is undocumented (antom.md 10)
    row_tolerance_minor: int = Field(1, ge=0)
    # BC-3 tolerance in fen: the CNY columns are rounded independently, Rmb_settlement is "a few fen" away from
    # Settlement x Rate in the documented sample (barcode.md 2.3 [inferred])
    barcode_cny_tolerance_minor: int = Field(5, ge=0)


class WorkspaceConfig(_Model):
    version: int = 1
    parse: ParseConfig = Field(default_factory=ParseConfig)
    # the user's own records: one entry per ledger (each with its own column mapping and family)
    ledgers: list[LedgerConfig] = Field(default_factory=list)
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    accounts: list[AccountConfig] = Field(default_factory=list)
    duckdb: DuckDBConfig = Field(default_factory=DuckDBConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    pay: PayConfig | None = None  # barcode payments (issue 5): profiles + flow settings; None = not used

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


# -- Barcode payments (issue 5): pay profiles. barcode.md 10.7 (seed 004): sandbox and production differ in
# client ID, RSA2 key and merchant ID, so a profile holds all of them and ``PayConfig.active`` switches them
# together. No secret here: the private key comes from a file or an environment variable.
PAY_PRODUCTION_ENDPOINT = "https://open-sea.alipay.com/api/alipay/intl/acquiring"  # barcode.md 10.1 (confirm)
PAY_PRODUCTION_HOSTS = ("open-sea.alipay.com", "open-na.alipay.com")  # barcode.md 10.1 (open-na: version 2.0.2)


class PayProfile(_Model):
    """One environment's identity at the barcode payment API (barcode.md 10.1, 10.3, 10.7)."""

    environment: Literal["sandbox", "production"]
    endpoint: HttpUrl = PAY_PRODUCTION_ENDPOINT  # base URL; the functions' paths follow (…/offline/pay.htm, 10.1)
    client_id: str = Field(min_length=1, max_length=32)  # head.clientId String(32), issued by Alipay (10.1)
    merchant_id: str = Field(min_length=1, max_length=64)  # body.merchantId String(64) (10.2)
    private_key_file: Path | None = None  # PEM (PKCS#1 or PKCS#8) or bare Base64; relative: from the workspace
    private_key_env: EnvVarName | None = None  # name of the environment variable holding the key text
    alipay_public_key_file: Path | None = None
    alipay_public_key: PublicKeyText | None = None  # PEM or bare Base64 (public: may be inline)
    # 10.3 step 2 [inferred]: the pages say SHA1withRSA, signType RSA2 suggests SHA256withRSA
    sign_type: Literal["RSA2", "RSA"] = "RSA2"
    version: str = Field("2.0.0", max_length=8)  # head.version: 2.0.0 (openapi pages) or 2.0.4 (publicapi) (10.1)
    timeout: float = Field(15.0, gt=0)  # seconds per call; past it the outcome is unknown (10.5 step 1)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_of_each(self) -> PayProfile:
        if (self.private_key_file is None) == (self.private_key_env is None):
            raise ValueError("a pay profile needs exactly one of private_key_file or private_key_env")
        if (self.alipay_public_key_file is None) == (self.alipay_public_key is None):
            raise ValueError("a pay profile needs exactly one of alipay_public_key_file or alipay_public_key")
        return self


class PayFlowConfig(_Model):
    """Overrides of ``pay.flow.FlowSettings`` (barcode.md 10.5: "every interval and count is configurable").
    ``None`` keeps the flow's default, which lives (with its source) in one place: ``FlowSettings``."""

    query_interval: float | None = Field(None, ge=0)
    max_queries: int | None = Field(None, ge=1)
    query_time_limit: float | None = Field(None, ge=0)
    not_exist_retries: int | None = Field(None, ge=0)
    not_exist_interval: tuple[float, float] | None = None
    cancel_retries: int | None = Field(None, ge=0)
    cancel_interval: float | None = Field(None, ge=0)
    refund_retries: int | None = Field(None, ge=0)
    refund_interval: float | None = Field(None, ge=0)

    @field_validator("not_exist_interval")
    @classmethod
    def _interval(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 <= value[0] <= value[1]:
            raise ValueError("not_exist_interval is [low, high] seconds with 0 <= low <= high")
        return value

    def overrides(self) -> dict[str, Any]:
        """The values set, as ``FlowSettings`` keyword arguments."""
        return {name: value for name, value in self.model_dump().items() if value is not None}


class PayConfig(_Model):
    """The sandbox and production profiles and the one switch between them (barcode.md 10.7)."""

    active: Literal["sandbox", "production"] = "sandbox"
    sandbox: PayProfile | None = None
    production: PayProfile | None = None
    production_hosts: list[str] = Field(default_factory=lambda: list(PAY_PRODUCTION_HOSTS))
    flow: PayFlowConfig = Field(default_factory=lambda: PayFlowConfig())

    @model_validator(mode="after")
    def _consistent(self) -> PayConfig:
        for slot in ("sandbox", "production"):
            profile = getattr(self, slot)
            if profile is not None and profile.environment != slot:
                raise ValueError(f"pay.{slot} is marked environment={profile.environment!r}")
        if getattr(self, self.active) is None:
            raise ValueError(f"pay.active is {self.active!r} but pay.{self.active} is not configured")
        return self

    def profile(self) -> PayProfile:
        """The active profile: client ID, keys and merchant ID switch together."""
        chosen: PayProfile | None = getattr(self, self.active)
        assert chosen is not None  # _consistent
        return chosen
