"""The canonical Arrow schemas every family is normalised into.

Why: checks and matching are written once against these columns, whatever the provider's header
said. Money is always ``<name>_minor`` (int64 minor units) beside ``<name>_currency``; times are UTC
with the offset they were written in; every report line knows the sha256 and line of its file, and
every ledger line its file and row, so an exception can always point at both sides.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "CHECK_RESULT",
    "DECLARED",
    "EXCEPTION",
    "FX_RATE_TYPE",
    "LEDGER_LINE",
    "LINEAGE",
    "RECORD_TYPES",
    "REPORT_LINE",
    "empty_table",
]

# FX rates are exact decimals; 18 fractional digits cover every documented quotePrice.
FX_RATE_TYPE = pa.decimal128(38, 18)
_TS = pa.timestamp("us", tz="UTC")

# Canonical record types. Report-specific values (e.g. Antom DISPUTE_REVERSAL) are kept as written
# in ``raw_type``; ``record_type`` holds the upper-cased value, so new types flow through unchanged.
RECORD_TYPES = (
    "PAYMENT",
    "REFUND",
    "CANCEL",
    "CAPTURE",
    "AUTHORIZATION",
    "VOID",
    "DISPUTE",
    "REVERSAL",
    "FEE",
    "ADJUSTMENT",
)

_MONEY_AND_IDS = [
    pa.field("record_type", pa.string()),
    pa.field("account_id", pa.string()),
    pa.field("provider_txn_id", pa.string()),
    pa.field("merchant_ref_id", pa.string()),
    pa.field("order_id", pa.string()),
    pa.field("original_provider_txn_id", pa.string()),
    pa.field("original_merchant_ref_id", pa.string()),
    pa.field("status", pa.string()),
    pa.field("amount_minor", pa.int64()),
    pa.field("amount_currency", pa.string()),
    pa.field("settlement_minor", pa.int64()),
    pa.field("settlement_currency", pa.string()),
    pa.field("fee_minor", pa.int64()),
    pa.field("fee_currency", pa.string()),
    pa.field("occurred_at", _TS),
    pa.field("occurred_offset_min", pa.int16()),
]

REPORT_LINE = pa.schema(
    [
        pa.field("family", pa.string(), nullable=False),
        pa.field("report", pa.string(), nullable=False),
        *_MONEY_AND_IDS,
        pa.field("raw_type", pa.string()),
        pa.field("fx_rate", FX_RATE_TYPE),
        pa.field("fx_pair", pa.string()),
        pa.field("settled_at", _TS),
        pa.field("settled_offset_min", pa.int16()),
        pa.field("clearing_batch_id", pa.string()),
        pa.field("settlement_batch_id", pa.string()),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("source_name", pa.string(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),
        pa.field("extras", pa.string()),  # JSON array of texts, named by the file's extras_names (engine.extras_dict)
    ],
    metadata={"alirecon": "ReportLine v1"},
)

LEDGER_LINE = pa.schema(
    [
        # which provider family the row is reconciled against (constant or a column of the user's ledger)
        pa.field("family", pa.string()),
        *_MONEY_AND_IDS,
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("source_name", pa.string(), nullable=False),
        pa.field("ledger_row", pa.int64(), nullable=False),
        pa.field("extras", pa.string()),  # JSON array of texts; their header names: the ledger file's extras_names
    ],
    metadata={"alirecon": "LedgerLine v1"},
)

# A figure a file states about itself (summary section, TOTAL row, footer, Total_count line).
DECLARED = pa.schema(
    [
        pa.field("family", pa.string(), nullable=False),
        pa.field("report", pa.string(), nullable=False),
        pa.field("scope", pa.string(), nullable=False),  # e.g. "TOTAL", "PAYMENT", "file"
        pa.field("batch_id", pa.string()),
        pa.field("figure", pa.string(), nullable=False),  # count | amount | settlement | fee | ...
        pa.field("value", pa.int64()),
        pa.field("currency", pa.string()),
        pa.field("direction", pa.string()),  # CREDIT/DEBIT where the file carries one
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("source_name", pa.string(), nullable=False),
        pa.field("line_no", pa.int64(), nullable=False),
    ],
    metadata={"alirecon": "Declared v1"},
)

LINEAGE = pa.struct(
    [
        pa.field("sha256", pa.string()),
        pa.field("name", pa.string()),
        pa.field("line", pa.int64()),
    ]
)

EXCEPTION = pa.schema(
    [
        pa.field("exception_class", pa.string(), nullable=False),
        pa.field("reason_code", pa.string(), nullable=False),
        pa.field("family", pa.string()),
        pa.field("report", pa.string()),
        pa.field("match_key", pa.string()),
        pa.field("record_type", pa.string()),
        pa.field("report_amount_minor", pa.int64()),
        pa.field("report_currency", pa.string()),
        pa.field("report_status", pa.string()),
        pa.field("ledger_amount_minor", pa.int64()),
        pa.field("ledger_currency", pa.string()),
        pa.field("ledger_status", pa.string()),
        pa.field("report_lines", pa.list_(LINEAGE)),
        pa.field("ledger_rows", pa.list_(LINEAGE)),
        pa.field("detail", pa.string()),
    ],
    metadata={"alirecon": "Exception v1"},
)

CHECK_RESULT = pa.schema(
    [
        pa.field("check_id", pa.string(), nullable=False),
        pa.field("reason_code", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # pass | fail | warn
        pa.field("family", pa.string()),
        pa.field("report", pa.string()),
        pa.field("scope", pa.string()),
        pa.field("currency", pa.string()),
        pa.field("expected", pa.int64()),
        pa.field("actual", pa.int64()),
        pa.field("lineage", pa.list_(LINEAGE)),
        pa.field("detail", pa.string()),
    ],
    metadata={"alirecon": "CheckResult v1"},
)


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
