"""Journaled refunds: ``common.refund`` with the same durability as the payment flow (barcode.md 10.2, 10.4).

Why: a refund that times out or answers U has an unknown outcome, and the only safe retry is the same request:
merchantId + acquirementId + merchantRefundId identify one refund (10.4), so a repeat returns the first refund's
result and never refunds twice. The journal (the payment journal's SQLite file) therefore keeps every refund
BEFORE it is sent and AFTER it returns, each in one transaction:

- NEW -> REFUNDING (before each attempt) -> SUCCESS (refundId kept) | FAILED (F: nothing refunded) | MANUAL (still
  unknown after ``FlowSettings.refund_retries`` more tries: a person asks support). A process killed anywhere
  resumes a REFUNDING refund by sending the same request again.
- Checks before anything is sent (``PayJournal.open_refund``): the same key with another amount is refused; a
  payment the journal knows as CANCELLED or FAILED is not refunded; partial refunds may not add up to more than the
  journaled payment (the gateway enforces the same for payments the journal does not know).
- Running the same refund again (same key) resumes it; a MANUAL one is tried again with the same key, which is
  safe for the same reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .client import PayClient, PayError
from .flow import FlowSettings, PayJournal, RefundRecord

__all__ = ["RefundFlow", "RefundObserver"]

RefundObserver = Callable[[str, RefundRecord], None]


class RefundFlow:
    """Runs refunds to a final state through ``client``, journaling every attempt in ``journal``.

    ``observer(event, record)`` is told ``before`` (journaled, not yet sent), ``returned`` (answered, not yet
    journaled) and ``after`` (journaled): a test kills the process there."""

    def __init__(self, client: PayClient, journal: PayJournal, settings: FlowSettings | None = None, *,
                 sleep: Callable[[float], None] = time.sleep, now: Callable[[], datetime] | None = None,
                 observer: RefundObserver | None = None) -> None:
        self.client = client
        self.journal = journal
        self.settings = settings or FlowSettings()
        self._sleep = sleep
        self._now = now or (lambda: datetime.now(UTC))
        self._observer = observer

    def refund(self, acquirement_id: str, merchant_refund_id: str, amount: int, currency: str, *,
               reason: str | None = None) -> RefundRecord:
        """Journal the refund and run it to a final state; the same key again resumes (or retries a MANUAL one)."""
        record = self.journal.open_refund(self.client.merchant_id, acquirement_id, merchant_refund_id, amount,
                                          currency, reason, self._now())
        if record.state == "MANUAL":
            record = self.journal.write_refund(record, self._now(), phase="note", state="REFUNDING", attempts=0,
                                               message="tried again by hand with the same merchantRefundId")
        return self._run(record)

    def resume(self, acquirement_id: str, merchant_refund_id: str) -> RefundRecord:
        record = self.journal.get_refund(self.client.merchant_id, acquirement_id, merchant_refund_id)
        if record is None:
            raise PayError(f"refund {merchant_refund_id} of {acquirement_id} is not in the journal of merchant "
                           f"{self.client.merchant_id}")
        return self._run(record)

    def resume_all(self) -> list[RefundRecord]:
        """Every unfinished refund of this merchant, run to a final state (call at start-up)."""
        return [self._run(r) for r in self.journal.refunds() if not r.final
                and r.merchant_id == self.client.merchant_id]

    def _observe(self, event: str, record: RefundRecord) -> None:
        if self._observer is not None:
            self._observer(event, record)

    def _run(self, record: RefundRecord) -> RefundRecord:
        while not record.final:
            record = self._attempt(record)
        return record

    def _attempt(self, record: RefundRecord) -> RefundRecord:
        cfg = self.settings
        if record.attempts > cfg.refund_retries:  # interrupted after its last attempt was journaled
            return self.journal.write_refund(record, self._now(), phase="note", state="MANUAL",
                                             reason=f"refund unresolved after {record.attempts} attempts "
                                                    f"(last {record.last_code}): contact support")
        if record.attempts:
            self._sleep(cfg.refund_interval)
        attempt = record.attempts + 1
        record = self.journal.write_refund(record, self._now(), phase="before", attempt=attempt, state="REFUNDING",
                                           attempts=attempt)
        self._observe("before", record)
        result = self.client.refund(record.acquirement_id, record.merchant_refund_id, record.amount, record.currency,
                                    reason=record.refund_reason)
        self._observe("returned", record)
        changes: dict[str, Any] = {"last_code": result.code}
        if result.status == "S":
            changes |= {"state": "SUCCESS", "refund_id": result.refund_id, "reason": None}
        elif result.status == "F":
            changes |= {"state": "FAILED", "reason": f"refund F {result.code}: {result.message}"}
        elif attempt > cfg.refund_retries:
            changes |= {"state": "MANUAL", "reason": f"refund still {result.status} ({result.code}) after {attempt} "
                                                     "attempts: contact support"}
        else:
            changes["reason"] = f"refund {result.code}: outcome unknown, retrying with the same merchantRefundId"
        record = self.journal.write_refund(record, self._now(), phase="after", attempt=attempt, result=result,
                                           **changes)
        self._observe("after", record)
        return record
