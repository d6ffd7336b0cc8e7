"""Journaled refunds (pay/refund.py) against the sandbox gateway: each branch under injected faults, the journal's
guards (same key, partial refunds up to the payment), the REFUND ledger rows and how reconcile links them, and a
property test over random fault sequences (never refunded twice, never beyond the payment)."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alirecon import pipeline
from alirecon.config import ReconcileConfig, WorkspaceConfig
from alirecon.formats import barcode
from alirecon.pay.client import REFUND_AMOUNT_EXCEED, PayError
from alirecon.pay.flow import FlowSettings, PayJournal
from alirecon.pay.ledger import journal_rows, write_journal_ledger
from alirecon.pay.refund import RefundFlow
from alirecon.warehouse import Workspace

from . import support, test_flow
from .support import MERCHANT_ID, Sandbox
from .test_flow import Harness, order

pay_keys, sandbox, harness = support.pay_keys, support.sandbox, test_flow.harness


def refunds(h: Harness, timeout: float = 5.0, **settings: float) -> RefundFlow:
    return RefundFlow(h.sandbox.client(timeout=timeout), h.journal, FlowSettings(**settings),  # type: ignore[arg-type]
                      sleep=h.sleeps, now=h.sandbox.clock.now)


def paid(h: Harness, trans_id: str, amount: int = 1000) -> str:
    record = h.flow().pay(order(trans_id, amount))
    assert record.state == "SUCCESS" and record.acquirement_id
    return record.acquirement_id


def gateway_refunds(h: Harness, trans_id: str) -> dict[str, int]:
    return {k: r.amount for k, r in h.sandbox.gateway.payments[(MERCHANT_ID, trans_id)].refunds.items()}


def steps(h: Harness, acquirement_id: str, refund_id: str) -> list[tuple[str, int, str | None, str]]:
    return [(s.phase, s.attempt, s.status, s.state) for s in h.journal.refund_steps(MERCHANT_ID, acquirement_id,
                                                                                      refund_id)]


def test_a_refund_is_journaled_before_and_after(harness: Harness) -> None:
    acq = paid(harness, "R-1")
    record = refunds(harness).refund(acq, "RF-1", 400, "USD", reason="broken cup")
    assert (record.state, record.merchant_trans_id, record.attempts, record.refund_reason) == \
        ("SUCCESS", "R-1", 1, "broken cup")
    assert record.refund_id == harness.sandbox.gateway.payments[(MERCHANT_ID, "R-1")].refunds["RF-1"].refund_id
    assert steps(harness, acq, "RF-1") == [("note", 0, None, "NEW"), ("before", 1, None, "REFUNDING"),
                                           ("after", 1, "S", "SUCCESS")]
    # the same refund again: the journal answers, nothing is sent
    calls = harness.sandbox.gateway.stats.calls["refund"]
    assert refunds(harness).refund(acq, "RF-1", 400, "USD") == record
    assert harness.sandbox.gateway.stats.calls["refund"] == calls == 1


def test_refund_u_is_retried_with_the_same_merchant_refund_id(harness: Harness) -> None:
    acq = paid(harness, "R-2")
    harness.sandbox.gateway.faults.refund_unknown = 1  # made at the gateway, answered U
    record = refunds(harness, refund_interval=3).refund(acq, "RF-2", 1000, "USD")
    assert (record.state, record.attempts, record.last_code) == ("SUCCESS", 2, "SUCCESS")
    assert harness.sleeps.waits == [3]
    assert gateway_refunds(harness, "R-2") == {"RF-2": 1000}  # one refund, never two
    assert [s[2] for s in steps(harness, acq, "RF-2") if s[0] == "after"] == ["U", "S"]


def test_refund_still_unknown_goes_manual_and_the_same_command_later_settles_it(harness: Harness) -> None:
    acq = paid(harness, "R-3")
    gateway = harness.sandbox.gateway
    gateway.faults.latency, gateway.faults.latency_calls, gateway.faults.latency_functions = 0.3, 2, \
        frozenset({"refund"})
    record = refunds(harness, timeout=0.1, refund_retries=1).refund(acq, "RF-3", 250, "USD")
    assert (record.state, record.attempts, record.last_code) == ("MANUAL", 2, "CLIENT_TIMEOUT")
    assert "contact support" in (record.reason or "")
    time.sleep(0.5)  # the late requests reach the provider: one refund, the repeat answered from it
    later = refunds(harness).refund(acq, "RF-3", 250, "USD")
    assert (later.state, later.refund_id is not None) == ("SUCCESS", True)
    assert gateway_refunds(harness, "R-3") == {"RF-3": 250}


def test_refund_f_fails_and_refunds_nothing(harness: Harness) -> None:
    acq = paid(harness, "R-4", 1000)
    with harness.sandbox.client() as client:  # a refund made elsewhere, not journaled
        assert client.refund(acq, "RF-ELSEWHERE", 900, "USD").status == "S"
    record = refunds(harness).refund(acq, "RF-4", 200, "USD")
    assert (record.state, record.last_code) == ("FAILED", REFUND_AMOUNT_EXCEED)
    assert gateway_refunds(harness, "R-4") == {"RF-ELSEWHERE": 900}


def test_partial_refunds_up_to_the_payment_and_the_journals_guards(harness: Harness) -> None:
    acq = paid(harness, "R-5", 1000)
    flow = refunds(harness)
    assert flow.refund(acq, "RF-5a", 600, "USD").state == "SUCCESS"
    assert flow.refund(acq, "RF-5b", 400, "USD").state == "SUCCESS"  # exactly the payment
    with pytest.raises(PayError, match="more than its 1000"):
        flow.refund(acq, "RF-5c", 1, "USD")
    with pytest.raises(PayError, match="another amount"):
        flow.refund(acq, "RF-5a", 500, "USD")
    with pytest.raises(PayError, match="was in USD, not EUR"):
        flow.refund(acq, "RF-5d", 1, "EUR")
    harness.sandbox.gateway.faults.pay_lost = 1  # never charged: cancelled
    cancelled = harness.flow(query_interval=0, not_exist_interval=(0, 0)).pay(order("R-6"))
    assert cancelled.state == "CANCELLED"
    harness.journal.write(cancelled, harness.sandbox.clock.now(), function="flow", phase="note",
                          acquirement_id="ACQ-OF-A-CANCELLED-PAYMENT")
    with pytest.raises(PayError, match="CANCELLED"):
        flow.refund("ACQ-OF-A-CANCELLED-PAYMENT", "RF-6", 1, "USD")
    assert gateway_refunds(harness, "R-5") == {"RF-5a": 600, "RF-5b": 400}
    assert harness.sandbox.gateway.stats.calls["refund"] == 2
    assert [r.merchant_refund_id for r in harness.journal.refunds()] == ["RF-5a", "RF-5b"]


def test_resume_all_finishes_an_interrupted_refund_once(harness: Harness) -> None:
    acq = paid(harness, "R-7")
    record = harness.journal.open_refund(MERCHANT_ID, acq, "RF-7", 300, "USD", None, harness.sandbox.clock.now())
    # sent, then the process died before the answer was journaled
    harness.journal.write_refund(record, harness.sandbox.clock.now(), phase="before", attempt=1, state="REFUNDING",
                                 attempts=1)
    with harness.sandbox.client() as client:
        assert client.refund(acq, "RF-7", 300, "USD").status == "S"
    (resumed,) = refunds(harness).resume_all()
    assert (resumed.state, resumed.attempts) == ("SUCCESS", 2)
    assert gateway_refunds(harness, "R-7") == {"RF-7": 300}
    assert refunds(harness).resume_all() == []


def test_refunds_become_linked_ledger_rows_that_reconcile(harness: Harness, tmp_path: Path) -> None:
    acq = paid(harness, "R-8", 1000)
    refund = refunds(harness).refund(acq, "RF-8", 250, "USD")
    rows = journal_rows(harness.journal, MERCHANT_ID)
    assert [(r["merchant_ref_id"], r["record_type"], r["amount"], r["status"], r["provider_txn_id"],
             r["original_merchant_ref_id"], r["original_provider_txn_id"]) for r in rows] == [
        ("R-8", "PAYMENT", 1000, "SUCCESS", acq, None, None),
        ("RF-8", "REFUND", -250, "SUCCESS", refund.refund_id, "R-8", acq)]
    ledger = write_journal_ledger(rows, tmp_path / "journal.csv")

    def reconciled(original: str, root: Path) -> list[tuple[str, str, str]]:
        """The AlipayHK transaction file (barcode.md 4.1): a refund row names its payment's merchant id."""
        day = date(2026, 11, 20)
        base = {"Currency": "USD", "Payment_time": "11/20/2026 10:00", "Product": "CASHIER_PAY", "Status": "SUCCESS"}
        file_rows = [{**base, "Partner_transaction_id": "R-8", "Transaction_id": acq, "Amount": 1000, "Fee": 0,
                      "Type": "PAYMENT"},
                     {**base, "Partner_transaction_id": "RF-8", "Transaction_id": refund.refund_id, "Amount": 250,
                      "Fee": 0, "Type": "REFUND", "Original_partner_transaction_ID": original}]
        report = root / barcode.file_name("hk_transaction", MERCHANT_ID, day)
        root.mkdir()
        report.write_bytes(barcode.write_report("hk_transaction", file_rows))
        config = WorkspaceConfig(ledgers=[ledger], reconcile=ReconcileConfig(match_reports={"barcode": [
            "hk_transaction"]}))
        with Workspace.init(root / "ws", config) as ws:
            assert ws.ingest([report]).ok
            pipeline.ingest_ledgers(ws)
            run = pipeline.reconcile(ws)
            assert run.counts["barcode"].get("matched", 0) == 2 - len(run.exceptions)
            return sorted((r["exception_class"], r["reason_code"], r["match_key"]) for r in run.exceptions.to_pylist())

    assert reconciled("R-8", tmp_path / "same") == []
    assert reconciled("R-OTHER", tmp_path / "other") == [("link_mismatch", "REFUND_ORIGINAL_MISMATCH", "RF-8")]


def test_a_manual_payment_keeps_the_acquirement_id_an_answer_carried(harness: Harness) -> None:
    """Issue 5: a charged payment that ends MANUAL keeps the acquirementId of any answer, so the ledger row and the
    person resolving it can name Alipay's payment."""
    faults = harness.sandbox.gateway.faults
    faults.unknown_names_payment = True  # U answers carry the id of the order they could not settle
    faults.pay_unknown, faults.query_unknown, faults.cancel_unknown = 1, 99, 99
    record = harness.flow(max_queries=2, query_interval=0, cancel_interval=0, cancel_retries=1).pay(order("R-9"))
    charged = harness.sandbox.gateway.payments[(MERCHANT_ID, "R-9")].acquirement_id
    assert record.state == "MANUAL" and charged and record.acquirement_id == charged
    answers = [(s.function, s.status) for s in harness.journal.steps(MERCHANT_ID, "R-9") if s.phase == "after"]
    assert answers == [("pay", "U"), ("payQuery", "U"), ("payQuery", "U"), ("payCancel", "U"), ("payCancel", "U")]
    [row] = [r for r in journal_rows(harness.journal) if r["merchant_ref_id"] == "R-9"]
    assert (row["status"], row["provider_txn_id"]) == ("MANUAL", charged)
    # and a refund can then name the payment: the person refunds it rather than leaving the money taken
    assert refunds(harness).refund(charged, "RF-9", 1250, "USD").state == "SUCCESS"


def test_without_an_id_in_any_answer_none_is_invented(harness: Harness) -> None:
    faults = harness.sandbox.gateway.faults
    faults.pay_unknown, faults.query_unknown, faults.cancel_unknown = 1, 99, 99
    record = harness.flow(max_queries=2, query_interval=0, cancel_interval=0, cancel_retries=1).pay(order("R-10"))
    assert (record.state, record.acquirement_id) == ("MANUAL", None)


def test_unfinished_refunds_are_unknown_in_the_ledger(sandbox: Sandbox, tmp_path: Path) -> None:
    with PayJournal(tmp_path / "j.sqlite") as journal:
        journal.open_refund(MERCHANT_ID, "ACQ-X", "RF-X", 5, "USD", None, support.NOW - timedelta(hours=1))
        [row] = journal_rows(journal)
    assert (row["record_type"], row["status"], row["pay_state"], row["original_merchant_ref_id"],
            row["original_provider_txn_id"]) == ("REFUND", "UNKNOWN", "NEW", None, "ACQ-X")


_REFUND_FAULTS = st.fixed_dictionaries({"refund_unknown": st.integers(0, 3), "broken_signature": st.integers(0, 5)})
_REQUESTS = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 700)), min_size=1, max_size=5)


@settings(max_examples=25)
@given(faults=_REFUND_FAULTS, requests=_REQUESTS, retries=st.integers(0, 3))
def test_any_refund_sequence_never_refunds_twice_nor_beyond_the_payment(
        harness: Harness, faults: dict[str, int], requests: list[tuple[int, int]], retries: int) -> None:
    """Refund requests (some repeating a merchantRefundId, some too large) under random unknown and unverifiable
    answers: every refund ends final, the gateway holds at most one refund per id and never more than the
    payment, and the journal's SUCCESS refunds are exactly refunds the gateway made."""
    gateway = harness.sandbox.gateway
    trans_id = f"RP-{gateway.stats.requests}"
    acq = paid(harness, trans_id, 1000)
    for name, value in faults.items():
        setattr(gateway.faults, name, value)
    flow = refunds(harness, refund_retries=retries, refund_interval=0)
    first_amount: dict[str, int] = {}
    for n, amount in requests:
        key = f"RF-{n}"
        try:
            record = flow.refund(acq, key, first_amount.setdefault(key, amount), "USD")
        except PayError:  # beyond what the journal says is left: refused before sending
            continue
        assert record.final and (record.state == "SUCCESS" or record.reason)
    made = gateway_refunds(harness, trans_id)
    assert sum(made.values()) <= 1000
    journaled = {r.merchant_refund_id: r for r in harness.journal.refunds() if r.acquirement_id == acq}
    assert all(r.final for r in journaled.values())
    assert {k: r.amount for k, r in journaled.items() if r.state == "SUCCESS"}.items() <= made.items()
    assert all(journaled[k].state in ("SUCCESS", "MANUAL") for k in made)  # nothing made is called FAILED
    assert sum(r.amount for r in journaled.values() if r.state != "FAILED") <= 1000
