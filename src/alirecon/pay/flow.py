"""The best-practice payment flow (barcode.md 10.5) as a durable state machine journaled in SQLite.

Why: a network failure leaves a payment unknown; the provider's process settles it (query, query again when
the order does not exist yet, cancel when the time is up, retry the cancel, then a person), and a crash must
not lose that process nor charge the buyer twice. So:

- Every call is journaled in SQLite (WAL, ``synchronous=FULL``) BEFORE it is made (the state it leaves, the
  attempt counted) and AFTER it returns (its outcome and the next state), each in one transaction. A process
  killed anywhere resumes from the journal.
- ``pay`` is sent at most once per payment: a pay journaled before but not after has an unknown outcome and
  resumes as a query (10.5 step 1), never as a second pay. The buyer's payment code is erased from the
  journal in the same transaction that marks the pay as sent. Retries of the other calls repeat the same
  merchantId + merchantTransId (10.4), so a repeated cancel or query is harmless.
- States: NEW -> PAYING -> SUCCESS | FAILED | QUERYING; QUERYING -> SUCCESS | CANCELLED | FAILED | CANCELLING;
  CANCELLING -> CANCELLED | MANUAL. Final: SUCCESS, CANCELLED, FAILED, MANUAL (with its reason).
- Every interval and count is a ``FlowSettings`` field; ``sleep``, ``now`` and ``rng`` are injectable.
- A payment keeps the acquirementId of any answer that names it (pay, payQuery or payCancel, whatever its
  status), so a charged payment that ends MANUAL can still be named to support, refunded and reconciled.
- The same journal keeps refunds (tables ``refunds`` / ``refund_steps``; the flow is ``pay.refund``).
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from .client import ORDER_NOT_EXIST, PayClient, PayError, PayResult, money_field

__all__ = [
    "FINAL_STATES",
    "REFUND_FINAL_STATES",
    "FlowSettings",
    "JournalStep",
    "PayFlow",
    "PayJournal",
    "PaymentRecord",
    "PaymentRequest",
    "RefundRecord",
    "RefundState",
    "State",
]

State = Literal["NEW", "PAYING", "QUERYING", "CANCELLING", "SUCCESS", "CANCELLED", "FAILED", "MANUAL"]
FINAL_STATES: tuple[State, ...] = ("SUCCESS", "CANCELLED", "FAILED", "MANUAL")
# payQuery's acquirementStatus values [inferred: 10.2 does not list the field]: paid, closed, refused
_PAID = {"SUCCESS"}
_CLOSED = {"CLOSED", "CANCELLED"}
_REFUSED = {"FAIL", "FAILED"}


@dataclass(frozen=True)
class FlowSettings:
    """The flow's intervals (seconds) and counts; defaults cite 10.5 or say [inferred]."""

    query_interval: float = 5.0  # [inferred] family B gives none; family A queries every 3 s (10.5, other guidance)
    max_queries: int = 10  # the merchant's query limit ("you can specify the limit of retry times", 10.5 step 3)
    query_time_limit: float = 60.0  # seconds after the unknown outcome; whichever limit comes first [inferred]
    not_exist_retries: int = 2  # ORDER_NOT_EXIST -> two more queries (10.5 step 2)
    not_exist_interval: tuple[float, float] = (5.0, 7.0)  # "5- to 7-second interval" (10.5 step 2)
    cancel_retries: int = 3  # payCancel U -> three to five more tries (10.5 step 4)
    cancel_interval: float = 5.0  # [inferred] not documented
    # refund U or timeout -> retry with the same merchantRefundId (10.2 refund, 10.4); how often is not documented
    refund_retries: int = 3  # [inferred] as many as the cancel's
    refund_interval: float = 5.0  # [inferred] not documented

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if any(v < 0 for v in (value if isinstance(value, tuple) else (value,))):
                raise ValueError(f"FlowSettings.{f.name} must not be negative")
        low, high = self.not_exist_interval
        if low > high:
            raise ValueError("FlowSettings.not_exist_interval must be (low, high)")
        if self.max_queries < 1:
            raise ValueError("FlowSettings.max_queries must be at least 1")


@dataclass(frozen=True)
class PaymentRequest:
    """One payment at the counter. ``merchant_trans_id`` is the idempotency key: the caller's, never renewed."""

    merchant_trans_id: str
    amount: int  # minor units
    currency: str
    identity_code: str = field(repr=False)  # the buyer's scanned code
    order_title: str


@dataclass(frozen=True)
class PaymentRecord:
    """A payment as journaled."""

    merchant_id: str
    merchant_trans_id: str
    amount: int
    currency: str
    order_title: str
    state: State
    acquirement_id: str | None
    queries: int
    not_exist: int
    cancels: int
    query_deadline: datetime | None
    last_code: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class JournalStep:
    """One journal line: a call before it was made, or after it returned (or a transition of its own)."""

    id: int
    merchant_trans_id: str
    function: str  # pay | payQuery | payCancel | flow
    phase: Literal["before", "after", "note"]
    attempt: int
    status: str | None
    code: str | None
    message: str | None
    state: State
    at: datetime


_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    merchant_id TEXT NOT NULL,
    merchant_trans_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    order_title TEXT NOT NULL,
    identity_code TEXT,
    state TEXT NOT NULL,
    acquirement_id TEXT,
    queries INTEGER NOT NULL DEFAULT 0,
    not_exist INTEGER NOT NULL DEFAULT 0,
    cancels INTEGER NOT NULL DEFAULT 0,
    query_deadline TEXT,
    last_code TEXT,
    reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (merchant_id, merchant_trans_id)
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id TEXT NOT NULL,
    merchant_trans_id TEXT NOT NULL,
    function TEXT NOT NULL,
    phase TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT,
    code TEXT,
    message TEXT,
    state TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS steps_by_payment ON steps (merchant_id, merchant_trans_id, id);
CREATE TABLE IF NOT EXISTS refunds (
    merchant_id TEXT NOT NULL,
    acquirement_id TEXT NOT NULL,
    merchant_refund_id TEXT NOT NULL,
    merchant_trans_id TEXT,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    refund_reason TEXT,
    state TEXT NOT NULL,
    refund_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_code TEXT,
    reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (merchant_id, acquirement_id, merchant_refund_id)
);
CREATE TABLE IF NOT EXISTS refund_steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id TEXT NOT NULL,
    acquirement_id TEXT NOT NULL,
    merchant_refund_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT,
    code TEXT,
    message TEXT,
    state TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refund_steps_by_refund ON refund_steps (merchant_id, acquirement_id, merchant_refund_id, id);
"""
RefundState = Literal["NEW", "REFUNDING", "SUCCESS", "FAILED", "MANUAL"]
REFUND_FINAL_STATES: tuple[RefundState, ...] = ("SUCCESS", "FAILED", "MANUAL")


@dataclass(frozen=True)
class RefundRecord:
    """A refund as journaled, keyed by merchantId + acquirementId + merchantRefundId (10.4).
    ``merchant_trans_id``: the refunded payment's, when the journal knows the payment (the ledger's link)."""

    merchant_id: str
    acquirement_id: str
    merchant_refund_id: str
    merchant_trans_id: str | None
    amount: int
    currency: str
    refund_reason: str | None
    state: RefundState
    refund_id: str | None
    attempts: int
    last_code: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def final(self) -> bool:
        return self.state in REFUND_FINAL_STATES


_REFUND_COLUMNS = tuple(f.name for f in fields(RefundRecord))
_RECORD_COLUMNS = tuple(f.name for f in fields(PaymentRecord))


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class PayJournal:
    """The flow's SQLite journal, in a file the caller chooses (the workspace's). One connection per process."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._con.execute("PRAGMA journal_mode=WAL").fetchall()
        self._con.execute("PRAGMA synchronous=FULL")
        self._con.executescript(_SCHEMA)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> PayJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    # -- reading ---------------------------------------------------------------------------------

    def get(self, merchant_id: str, merchant_trans_id: str) -> PaymentRecord | None:
        row = self._con.execute(f"SELECT {', '.join(_RECORD_COLUMNS)} FROM payments WHERE merchant_id = ? AND "
                                "merchant_trans_id = ?", (merchant_id, merchant_trans_id)).fetchone()
        return _record(row) if row else None

    def payments(self, state: State | None = None) -> list[PaymentRecord]:
        """Every payment (or those in ``state``), oldest first: the ledger's view and the manual list."""
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self._con.execute(f"SELECT {', '.join(_RECORD_COLUMNS)} FROM payments {where} "
                                 "ORDER BY created_at, merchant_trans_id", args).fetchall()
        return [_record(r) for r in rows]

    def unfinished(self) -> list[PaymentRecord]:
        return [p for p in self.payments() if not p.final]

    def steps(self, merchant_id: str, merchant_trans_id: str) -> list[JournalStep]:
        rows = self._con.execute("SELECT id, merchant_trans_id, function, phase, attempt, status, code, message, "
                                 "state, at FROM steps WHERE merchant_id = ? AND merchant_trans_id = ? ORDER BY id",
                                 (merchant_id, merchant_trans_id)).fetchall()
        return _journal_steps(rows)

    def pending_identity_code(self, record: PaymentRecord) -> str | None:
        """The buyer's code of a payment whose pay was never sent (erased once it is)."""
        row = self._con.execute("SELECT identity_code FROM payments WHERE merchant_id = ? AND merchant_trans_id = ?",
                                (record.merchant_id, record.merchant_trans_id)).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    # -- writing ---------------------------------------------------------------------------------

    def open(self, merchant_id: str, request: PaymentRequest, now: datetime) -> PaymentRecord:
        """Journal a new payment, or return the one already journaled under the same key. The same key with
        another amount, currency or title is refused: a retry must be the same payment (10.4)."""
        money_field(request.amount, request.currency)
        with self._tx() as con:
            known = self.get(merchant_id, request.merchant_trans_id)
            if known is not None:
                if (known.amount, known.currency, known.order_title) != (request.amount, request.currency,
                                                                          request.order_title):
                    raise PayError(f"merchantTransId {request.merchant_trans_id} is already journaled with another "
                                   "amount, currency or title; a new payment needs a new merchantTransId")
                return known
            stamp = now.isoformat()
            con.execute("INSERT INTO payments (merchant_id, merchant_trans_id, amount, currency, order_title, "
                        "identity_code, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'NEW', ?, ?)",
                        (merchant_id, request.merchant_trans_id, request.amount, request.currency,
                         request.order_title, request.identity_code, stamp, stamp))
            self._step(con, merchant_id, request.merchant_trans_id, "flow", "note", 0, None, None, "journaled", "NEW",
                       stamp)
        record = self.get(merchant_id, request.merchant_trans_id)
        assert record is not None
        return record

    def write(self, record: PaymentRecord, now: datetime, *, function: str, phase: Literal["before", "after", "note"],
              attempt: int = 0, result: PayResult | None = None, message: str | None = None,
              forget_identity_code: bool = False, **changes: Any) -> PaymentRecord:
        """One transaction: the payment's new fields and the step that explains them."""
        changes["updated_at"] = now.isoformat()
        if isinstance(changes.get("query_deadline"), datetime):
            changes["query_deadline"] = changes["query_deadline"].isoformat()
        if forget_identity_code:
            changes["identity_code"] = None
        assignments = ", ".join(f"{name} = ?" for name in changes)
        state = changes.get("state", record.state)
        with self._tx() as con:
            con.execute(f"UPDATE payments SET {assignments} WHERE merchant_id = ? AND merchant_trans_id = ?",
                        (*changes.values(), record.merchant_id, record.merchant_trans_id))
            self._step(con, record.merchant_id, record.merchant_trans_id, function, phase, attempt,
                       *_outcome(result, message), state, changes["updated_at"])
        updated = self.get(record.merchant_id, record.merchant_trans_id)
        assert updated is not None
        return updated

    def resolve_manual(self, merchant_id: str, merchant_trans_id: str, state: Literal["SUCCESS", "CANCELLED", "FAILED"],
                       note: str, *, now: datetime | None = None) -> PaymentRecord:
        """A person settled a MANUAL payment (with support, 10.5 step 4): record what they found and why."""
        record = self.get(merchant_id, merchant_trans_id)
        if record is None or record.state != "MANUAL":
            raise PayError(f"merchantTransId {merchant_trans_id} is not on the manual list")
        return self.write(record, now or datetime.now(UTC), function="flow", phase="note", message=note, state=state,
                          reason=f"resolved by hand: {note}")

    # -- refunds (pay/refund.py) -------------------------------------------------------------------

    def get_refund(self, merchant_id: str, acquirement_id: str, merchant_refund_id: str) -> RefundRecord | None:
        row = self._con.execute(f"SELECT {', '.join(_REFUND_COLUMNS)} FROM refunds WHERE merchant_id = ? AND "
                                "acquirement_id = ? AND merchant_refund_id = ?",
                                (merchant_id, acquirement_id, merchant_refund_id)).fetchone()
        return _refund_record(row) if row else None

    def refunds(self, state: RefundState | None = None) -> list[RefundRecord]:
        """Every journaled refund (or those in ``state``), oldest first."""
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        rows = self._con.execute(f"SELECT {', '.join(_REFUND_COLUMNS)} FROM refunds {where} "
                                 "ORDER BY created_at, acquirement_id, merchant_refund_id", args).fetchall()
        return [_refund_record(r) for r in rows]

    def refund_steps(self, merchant_id: str, acquirement_id: str, merchant_refund_id: str) -> list[JournalStep]:
        rows = self._con.execute("SELECT id, merchant_refund_id, 'refund', phase, attempt, status, code, message, "
                                 "state, at FROM refund_steps WHERE merchant_id = ? AND acquirement_id = ? AND "
                                 "merchant_refund_id = ? ORDER BY id",
                                 (merchant_id, acquirement_id, merchant_refund_id)).fetchall()
        return _journal_steps(rows)

    def open_refund(self, merchant_id: str, acquirement_id: str, merchant_refund_id: str, amount: int, currency: str,
                    refund_reason: str | None, now: datetime) -> RefundRecord:
        """Journal a new refund, or return the one journaled under the same key (a retry: 10.4). Refused before
        anything is sent: the same key with another amount or currency; a refund of a payment the journal knows
        as not charged (CANCELLED, FAILED) or in another currency; refunds above the payment's amount (10.2)."""
        money_field(amount, currency)
        with self._tx() as con:
            known = self.get_refund(merchant_id, acquirement_id, merchant_refund_id)
            if known is not None:
                if (known.amount, known.currency) != (amount, currency):
                    raise PayError(f"merchantRefundId {merchant_refund_id} is already journaled with another amount "
                                   "or currency; a new refund needs a new merchantRefundId")
                return known
            payment = con.execute("SELECT merchant_trans_id, amount, currency, state FROM payments "
                                  "WHERE merchant_id = ? AND acquirement_id = ?", (merchant_id, acquirement_id)
                                  ).fetchone()
            if payment is not None:
                trans_id, paid, paid_currency, state = payment
                if state in ("CANCELLED", "FAILED"):
                    raise PayError(f"payment {trans_id} is {state} in the journal: there is nothing to refund")
                if paid_currency != currency:
                    raise PayError(f"payment {trans_id} was in {paid_currency}, not {currency}")
                (refunded,) = con.execute("SELECT coalesce(sum(amount), 0) FROM refunds WHERE merchant_id = ? AND "
                                          "acquirement_id = ? AND state <> 'FAILED'",
                                          (merchant_id, acquirement_id)).fetchone()
                if refunded + amount > paid:
                    raise PayError(f"refunds of payment {trans_id} would total {refunded + amount}, more than its "
                                   f"{paid} (minor units)")
            stamp = now.isoformat()
            con.execute("INSERT INTO refunds (merchant_id, acquirement_id, merchant_refund_id, merchant_trans_id, "
                        "amount, currency, refund_reason, state, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, 'NEW', ?, ?)",
                        (merchant_id, acquirement_id, merchant_refund_id, payment[0] if payment else None, amount,
                         currency, refund_reason, stamp, stamp))
            self._refund_step(con, merchant_id, acquirement_id, merchant_refund_id, "note", 0, None, None, "journaled",
                              "NEW", stamp)
        record = self.get_refund(merchant_id, acquirement_id, merchant_refund_id)
        assert record is not None
        return record

    def write_refund(self, record: RefundRecord, now: datetime, *, phase: Literal["before", "after", "note"],
                     attempt: int = 0, result: PayResult | None = None, message: str | None = None,
                     **changes: Any) -> RefundRecord:
        """One transaction: the refund's new fields and the step that explains them."""
        changes["updated_at"] = now.isoformat()
        assignments = ", ".join(f"{name} = ?" for name in changes)
        key = (record.merchant_id, record.acquirement_id, record.merchant_refund_id)
        with self._tx() as con:
            con.execute(f"UPDATE refunds SET {assignments} WHERE merchant_id = ? AND acquirement_id = ? AND "
                        "merchant_refund_id = ?", (*changes.values(), *key))
            self._refund_step(con, *key, phase, attempt, *_outcome(result, message),
                              changes.get("state", record.state), changes["updated_at"])
        updated = self.get_refund(*key)
        assert updated is not None
        return updated

    @staticmethod
    def _refund_step(con: sqlite3.Connection, merchant_id: str, acquirement_id: str, refund_id: str, phase: str,
                     attempt: int, status: str | None, code: str | None, message: str | None, state: str,
                     at: str) -> None:
        con.execute("INSERT INTO refund_steps (merchant_id, acquirement_id, merchant_refund_id, phase, attempt, "
                    "status, code, message, state, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (merchant_id, acquirement_id, refund_id, phase, attempt, status, code, message, state, at))

    @staticmethod
    def _step(con: sqlite3.Connection, merchant_id: str, trans_id: str, function: str, phase: str, attempt: int,
              status: str | None, code: str | None, message: str | None, state: str, at: str) -> None:
        con.execute("INSERT INTO steps (merchant_id, merchant_trans_id, function, phase, attempt, status, code, "
                    "message, state, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (merchant_id, trans_id, function, phase, attempt, status, code, message, state, at))


def _outcome(result: PayResult | None, message: str | None) -> tuple[str | None, str | None, str | None]:
    """A step's status, code and message: the call's, with ``message`` (when given) in place of its own."""
    if result is None:
        return None, None, message
    return result.status, result.code, message if message is not None else result.message


def _journal_steps(rows: list[Any]) -> list[JournalStep]:
    """``JournalStep``s from rows of (id, key, function, phase, attempt, status, code, message, state, at)."""
    return [JournalStep(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], datetime.fromisoformat(r[9]))
            for r in rows]


def _refund_record(row: tuple[Any, ...]) -> RefundRecord:
    values = dict(zip(_REFUND_COLUMNS, row, strict=True))
    for name in ("created_at", "updated_at"):
        values[name] = datetime.fromisoformat(values[name])
    return RefundRecord(**values)


def _record(row: tuple[Any, ...]) -> PaymentRecord:
    values = dict(zip(_RECORD_COLUMNS, row, strict=True))
    for name in ("query_deadline", "created_at", "updated_at"):
        values[name] = _when(values[name])
    return PaymentRecord(**values)


Observer = Callable[[str, str, PaymentRecord], None]


class PayFlow:
    """Runs payments to a final state through ``client``, journaling every step in ``journal``.

    ``observer(event, function, record)`` is told ``before`` (journaled, not yet sent), ``returned`` (answered,
    not yet journaled) and ``after`` (journaled): a test kills the process there.
    """

    def __init__(self, client: PayClient, journal: PayJournal, settings: FlowSettings | None = None, *,
                 sleep: Callable[[float], None] = time.sleep, now: Callable[[], datetime] | None = None,
                 rng: random.Random | None = None, observer: Observer | None = None) -> None:
        self.client = client
        self.journal = journal
        self.settings = settings or FlowSettings()
        self._sleep = sleep
        self._now = now or (lambda: datetime.now(UTC))
        self._rng = rng or random.Random()
        self._observer = observer

    def pay(self, request: PaymentRequest) -> PaymentRecord:
        """Journal the payment and run it to a final state (or resume it, for a key already journaled)."""
        return self._run(self.journal.open(self.client.merchant_id, request, self._now()))

    def resume(self, merchant_trans_id: str) -> PaymentRecord:
        record = self.journal.get(self.client.merchant_id, merchant_trans_id)
        if record is None:
            raise PayError(f"merchantTransId {merchant_trans_id} is not in the journal of merchant "
                           f"{self.client.merchant_id}")
        return self._run(record)

    def resume_all(self) -> list[PaymentRecord]:
        """Every unfinished payment of this merchant, run to a final state (call at start-up)."""
        return [self._run(p) for p in self.journal.unfinished() if p.merchant_id == self.client.merchant_id]

    # -- the machine -----------------------------------------------------------------------------

    def _run(self, record: PaymentRecord) -> PaymentRecord:
        while not record.final:
            record = self._step(record)
        return record

    def _step(self, record: PaymentRecord) -> PaymentRecord:
        if record.state == "NEW":
            return self._pay(record)
        if record.state == "PAYING":  # journaled before, never after: sent or not, its outcome is unknown
            return self.journal.write(record, self._now(), function="flow", phase="note", state="QUERYING",
                                      message="the pay was interrupted; its outcome is unknown: querying",
                                      query_deadline=self._deadline(), forget_identity_code=True)
        if record.state == "QUERYING":
            return self._query(record)
        return self._cancel(record)

    def _deadline(self) -> datetime:
        return self._now() + timedelta(seconds=self.settings.query_time_limit)

    def _observe(self, event: str, function: str, record: PaymentRecord) -> None:
        if self._observer is not None:
            self._observer(event, function, record)

    def _before(self, record: PaymentRecord, function: str, attempt: int, **changes: Any) -> PaymentRecord:
        record = self.journal.write(record, self._now(), function=function, phase="before", attempt=attempt,
                                    **changes)
        self._observe("before", function, record)
        return record

    def _after(self, record: PaymentRecord, function: str, attempt: int, result: PayResult, **changes: Any
               ) -> PaymentRecord:
        self._observe("returned", function, record)
        if result.acquirement_id and not record.acquirement_id and "acquirement_id" not in changes:
            # any answer (pay, payQuery, payCancel; S, F or U) naming the payment: kept, so a MANUAL payment the
            # gateway charged still carries Alipay's id to the ledger and to a person (issue 5)
            changes["acquirement_id"] = result.acquirement_id
        record = self.journal.write(record, self._now(), function=function, phase="after", attempt=attempt,
                                    result=result, last_code=result.code, **changes)
        self._observe("after", function, record)
        return record

    def _pay(self, record: PaymentRecord) -> PaymentRecord:
        identity_code = self.journal.pending_identity_code(record)
        if identity_code is None:  # cannot happen for NEW; never pay without the buyer's code
            return self.journal.write(record, self._now(), function="flow", phase="note", state="FAILED",
                                      reason="the buyer's payment code is not in the journal; nothing was sent")
        record = self._before(record, "pay", 1, state="PAYING", forget_identity_code=True)
        result = self.client.pay(record.merchant_trans_id, record.amount, record.currency, identity_code,
                                 order_title=record.order_title)
        if result.status == "S":
            return self._after(record, "pay", 1, result, state="SUCCESS", acquirement_id=result.acquirement_id)
        if result.status == "F":
            return self._after(record, "pay", 1, result, state="FAILED",
                               reason=f"pay F {result.code}: {result.message}")
        return self._after(record, "pay", 1, result, state="QUERYING", query_deadline=self._deadline(),
                           reason=f"pay {result.code}: outcome unknown")

    def _query(self, record: PaymentRecord) -> PaymentRecord:
        cfg = self.settings
        if record.queries >= cfg.max_queries:
            return self._stop_querying(record, f"{record.queries} queries")
        if record.queries:
            self._sleep(self._rng.uniform(*cfg.not_exist_interval) if record.last_code == ORDER_NOT_EXIST
                        else cfg.query_interval)
        if self._now() >= (record.query_deadline or self._deadline()):
            return self._stop_querying(record, f"the query time limit ({cfg.query_time_limit:g} s)")
        attempt = record.queries + 1
        record = self._before(record, "payQuery", attempt, queries=attempt)
        result = self.client.pay_query(record.merchant_trans_id, record.acquirement_id)
        status = result.acquirement_status
        if result.status == "S" and status in _PAID:
            return self._after(record, "payQuery", attempt, result, state="SUCCESS",
                               acquirement_id=result.acquirement_id or record.acquirement_id, reason=None)
        if result.status == "S" and status in _CLOSED:
            return self._after(record, "payQuery", attempt, result, state="CANCELLED",
                               reason=f"payQuery: the payment is {status}")
        if result.status == "S" and status in _REFUSED:
            return self._after(record, "payQuery", attempt, result, state="FAILED",
                               reason=f"payQuery: the payment is {status}")
        if result.status == "F" and result.code == ORDER_NOT_EXIST:
            not_exist = record.not_exist + 1
            if not_exist > cfg.not_exist_retries:
                return self._after(record, "payQuery", attempt, result, state="CANCELLING", not_exist=not_exist,
                                   reason=f"ORDER_NOT_EXIST {not_exist} times: cancelling")
            return self._after(record, "payQuery", attempt, result, not_exist=not_exist)
        if result.status == "F":
            return self._after(record, "payQuery", attempt, result, state="CANCELLING",
                               reason=f"payQuery F {result.code}: cancelling")
        return self._after(record, "payQuery", attempt, result)  # U, or S with a payment still in process

    def _stop_querying(self, record: PaymentRecord, why: str) -> PaymentRecord:
        """10.5 step 3: past the merchant's query limit, cancel."""
        return self.journal.write(record, self._now(), function="flow", phase="note", state="CANCELLING",
                                  reason=f"still unknown after {why}: cancelling", message=why)

    def _cancel(self, record: PaymentRecord) -> PaymentRecord:
        cfg = self.settings
        if record.cancels > cfg.cancel_retries:  # interrupted after its last attempt was journaled
            return self.journal.write(record, self._now(), function="flow", phase="note", state="MANUAL",
                                      reason=f"payCancel unresolved after {record.cancels} attempts "
                                             f"(last {record.last_code}): contact support")
        if record.cancels:
            self._sleep(cfg.cancel_interval)
        attempt = record.cancels + 1
        record = self._before(record, "payCancel", attempt, cancels=attempt)
        result = self.client.pay_cancel(record.merchant_trans_id, record.acquirement_id)
        if result.status == "S":
            return self._after(record, "payCancel", attempt, result, state="CANCELLED", reason="cancelled")
        if result.status == "F":
            return self._after(record, "payCancel", attempt, result, state="MANUAL",
                               reason=f"payCancel F {result.code}: {result.message}; contact support")
        if attempt > cfg.cancel_retries:
            return self._after(record, "payCancel", attempt, result, state="MANUAL",
                               reason=f"payCancel still {result.status} ({result.code}) after {attempt} attempts: "
                                      "contact support")
        return self._after(record, "payCancel", attempt, result)
