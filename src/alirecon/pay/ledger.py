"""The payment journal as the merchant's own records: one ledger row per journaled payment.

Why (issue 5 item 3): reconciliation is where unknown payments are settled for good, so it must see them.
Every journaled payment becomes a ledger row keyed by its ``merchantTransId`` (the merchant's reference,
``merchant_ref_id``), with its amount in minor units and a status the matcher can compare with the next
day's files: a row that is not SUCCESS but shows up in settlement (or the reverse) is a ``status_mismatch``.

Statuses (the flow's states, pay/flow.py):
- SUCCESS -> ``SUCCESS``, FAILED -> ``FAILED``, MANUAL -> ``MANUAL`` (a person must decide; never successful);
- CANCELLED -> ``CANCELLED``: a cancelled payment must not appear in settlement (barcode.md 10.2 payCancel),
  so it is a non-success status of its own rather than FAILED, which would hide why it was not charged;
- NEW, PAYING, QUERYING, CANCELLING (unfinished: a crashed process that was not resumed yet) -> ``UNKNOWN``.

Refunds (``pay.refund``, journaled too) are REFUND rows keyed by their ``merchantRefundId``, amount negative (the
matcher's sign: PAYMENT +, REFUND -), linked to their payment the way the matcher links refunds
(``recon.match`` rule 7, ``config.MATCH_KEYS``): ``original_merchant_ref_id`` = the payment's merchantTransId (when
the journal knows the payment), ``original_provider_txn_id`` = its acquirementId; ``provider_txn_id`` = Alipay's
refundId. Refund statuses: SUCCESS, FAILED, MANUAL as such; NEW / REFUNDING (unfinished) -> ``UNKNOWN``.

The CSV is written with the very layout that reads it back (``ledger.ledger_layout`` of ``journal_ledger_config``
through ``formats.writer``), so the writer and the reader cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import LedgerConfig
from ..formats.writer import render_rows, write_csv
from ..ledger import ledger_layout
from .flow import PayJournal, RefundState, State

__all__ = ["JOURNAL_LEDGER_COLUMNS", "LEDGER_STATUS", "REFUND_LEDGER_STATUS", "journal_ledger_config", "journal_rows",
           "write_journal_ledger"]

FAMILY = "barcode"  # DESIGN.md: the barcode (in-store) family
LEDGER_STATUS: dict[State, str] = {
    "SUCCESS": "SUCCESS",
    "FAILED": "FAILED",
    "CANCELLED": "CANCELLED",
    "MANUAL": "MANUAL",
    "NEW": "UNKNOWN",
    "PAYING": "UNKNOWN",
    "QUERYING": "UNKNOWN",
    "CANCELLING": "UNKNOWN",
}
REFUND_LEDGER_STATUS: dict[RefundState, str] = {
    "SUCCESS": "SUCCESS",
    "FAILED": "FAILED",
    "MANUAL": "MANUAL",
    "NEW": "UNKNOWN",
    "REFUNDING": "UNKNOWN",
}
# LedgerLine field -> CSV column (the same names); ``merchant_id``, ``pay_state`` and ``reason`` are extras
JOURNAL_LEDGER_COLUMNS = {
    "merchant_ref_id": "merchant_ref_id",
    "provider_txn_id": "provider_txn_id",
    "record_type": "record_type",
    "amount": "amount",
    "currency": "currency",
    "status": "status",
    "occurred_at": "occurred_at",
    "original_merchant_ref_id": "original_merchant_ref_id",
    "original_provider_txn_id": "original_provider_txn_id",
}
_EXTRAS = ("merchant_id", "pay_state", "reason")
HEADER = (*JOURNAL_LEDGER_COLUMNS.values(), *_EXTRAS)


def journal_rows(journal: PayJournal, merchant_id: str | None = None) -> list[dict[str, Any]]:
    """One dict per journaled payment and refund (of ``merchant_id``, or all), oldest first (payments before
    refunds at the same instant), keyed by ``HEADER``. Values are Python values: ``amount`` int minor units (negative
    for refunds), ``occurred_at`` the aware time it was journaled."""
    payments = [
        {"merchant_ref_id": p.merchant_trans_id, "provider_txn_id": p.acquirement_id, "record_type": "PAYMENT",
         "amount": p.amount, "currency": p.currency, "status": LEDGER_STATUS[p.state], "occurred_at": p.created_at,
         "original_merchant_ref_id": None, "original_provider_txn_id": None,
         "merchant_id": p.merchant_id, "pay_state": p.state, "reason": p.reason}
        for p in journal.payments()
        if merchant_id is None or p.merchant_id == merchant_id
    ]
    refunds = [
        {"merchant_ref_id": r.merchant_refund_id, "provider_txn_id": r.refund_id, "record_type": "REFUND",
         "amount": -r.amount, "currency": r.currency, "status": REFUND_LEDGER_STATUS[r.state],
         "occurred_at": r.created_at, "original_merchant_ref_id": r.merchant_trans_id,
         "original_provider_txn_id": r.acquirement_id, "merchant_id": r.merchant_id, "pay_state": r.state,
         "reason": r.reason}
        for r in journal.refunds()
        if merchant_id is None or r.merchant_id == merchant_id
    ]
    return sorted(payments + refunds, key=lambda row: row["occurred_at"])


def journal_ledger_config(path: Path | None = None, *, name: str = "pay_journal") -> LedgerConfig:
    """The ``LedgerConfig`` that reads what ``write_journal_ledger`` writes (family barcode, minor units)."""
    return LedgerConfig(name=name, path=path, family=FAMILY, columns=dict(JOURNAL_LEDGER_COLUMNS),
                        amount_unit="minor")


def write_journal_ledger(rows: list[dict[str, Any]], path: Path) -> LedgerConfig:
    """Write ``rows`` (from ``journal_rows``) as a ledger CSV at ``path`` (atomically) and return its config."""
    config = journal_ledger_config(path)
    data = write_csv(HEADER, render_rows(ledger_layout(config), HEADER, rows), trailer=False)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return config
