"""kill -9 during each step of the flow, then resume: exactly one payment at the gateway, never two charges, and
a final known state that agrees with the gateway (barcode.md 10.5; issue 5 item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from alirecon.pay.flow import FlowSettings, PayFlow, PayJournal
from alirecon.pay.refund import RefundFlow

from . import support
from .support import CLIENT_ID, MERCHANT_ID, Sandbox

pay_keys = support.pay_keys
sandbox = support.sandbox

ROOT = Path(__file__).resolve().parents[2]

# pay U (charged) -> payQuery U -> payQuery U -> payCancel U -> payCancel S: CANCELLED
CANCEL_JOURNEY = {"pay_unknown": 1, "query_unknown": 2, "cancel_unknown": 1}
# pay U (charged) -> payQuery S: SUCCESS
QUERY_JOURNEY = {"pay_unknown": 1}
CASES = [
    (CANCEL_JOURNEY, "CANCELLED", "before", "pay", 1),  # journaled, never sent: the resumed flow must not pay
    (CANCEL_JOURNEY, "CANCELLED", "returned", "pay", 1),  # charged at the gateway, the answer not journaled
    (CANCEL_JOURNEY, "CANCELLED", "after", "pay", 1),
    (CANCEL_JOURNEY, "CANCELLED", "before", "payQuery", 1),
    (CANCEL_JOURNEY, "CANCELLED", "returned", "payQuery", 2),
    (CANCEL_JOURNEY, "CANCELLED", "before", "payCancel", 1),
    (CANCEL_JOURNEY, "CANCELLED", "returned", "payCancel", 1),
    (CANCEL_JOURNEY, "CANCELLED", "returned", "payCancel", 2),  # cancelled at the gateway, not in the journal
    (QUERY_JOURNEY, "SUCCESS", "returned", "pay", 1),
    (QUERY_JOURNEY, "SUCCESS", "before", "payQuery", 1),
    (QUERY_JOURNEY, "SUCCESS", "returned", "payQuery", 1),  # known at the gateway, not yet in the journal
]


def _killed_child(sandbox: Sandbox, tmp_path: Path, faults: dict[str, int], **spec: Any) -> Path:
    """Run tests.pay.kill_worker against the gateway with ``faults`` until its SIGKILL at ``spec["kill"]``;
    returns the journal it left."""
    gateway = sandbox.gateway
    for name, value in faults.items():
        setattr(gateway.faults, name, value)
    journal_path = tmp_path / "pay.sqlite"
    spec |= {"journal": str(journal_path), "endpoint": gateway.endpoint, "key_file": str(sandbox.key_file),
             "alipay_public_key": gateway.alipay_public_key_pem, "client_id": CLIENT_ID,
             "merchant_id": MERCHANT_ID, "max_queries": 2}
    child = subprocess.run([sys.executable, "-m", "tests.pay.kill_worker", json.dumps(spec)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -9, child.stderr  # killed by SIGKILL, at the chosen point
    return journal_path


@pytest.mark.parametrize(("faults", "expected", "event", "function", "nth"), CASES)
def test_kill_9_then_resume_never_pays_twice(sandbox: Sandbox, tmp_path: Path, faults: dict[str, int], expected: str,
                                              event: str, function: str, nth: int) -> None:
    gateway = sandbox.gateway
    journal_path = _killed_child(sandbox, tmp_path, faults, trans_id="K-1", kill=[event, function, nth])
    with PayJournal(journal_path) as journal:
        (interrupted,) = journal.unfinished()
        journal_steps = journal.steps(MERCHANT_ID, "K-1")
        flow = PayFlow(sandbox.client(), journal, FlowSettings(max_queries=2), sleep=lambda _: None)  # as the child
        (final,) = flow.resume_all()
        again = flow.resume("K-1")  # resuming a finished payment changes nothing
    assert final.state == expected and again == final
    assert not interrupted.final
    pay_sent = (event, function) != ("before", "pay")
    assert gateway.stats.calls["pay"] == (1 if pay_sent else 0)
    assert gateway.stats.charges[(MERCHANT_ID, "K-1")] == (1 if pay_sent else 0)
    assert [k for k in gateway.payments if k == (MERCHANT_ID, "K-1")] == [(MERCHANT_ID, "K-1")]
    accepted = {p.merchant_trans_id for p in gateway.accepted_payments()}
    assert ("K-1" in accepted) == (final.state == "SUCCESS")
    if event != "after":  # the killed call is journaled before, never after
        steps = [(s.function, s.phase) for s in journal_steps if s.function == function]
        assert steps.count((function, "before")) == steps.count((function, "after")) + 1


REFUND_CASES = [
    ({}, "before", 1),  # journaled, not sent: the resumed refund sends it once
    ({}, "returned", 1),  # refunded at the gateway, the answer not journaled: the resend is answered from it
    ({}, "after", 1),
    ({"refund_unknown": 1}, "returned", 2),  # U journaled, the retry's answer lost
]


@pytest.mark.parametrize(("faults", "event", "nth"), REFUND_CASES)
def test_kill_9_during_a_refund_then_resume_never_refunds_twice(sandbox: Sandbox, tmp_path: Path,
                                                                 faults: dict[str, int], event: str, nth: int) -> None:
    gateway = sandbox.gateway
    journal_path = _killed_child(sandbox, tmp_path, faults, trans_id="K-R", kill=[event, "refund", nth],
                                 refund=["KR-1", 1500])
    with PayJournal(journal_path) as journal:
        (interrupted,) = journal.refunds()
        flow = RefundFlow(sandbox.client(), journal, FlowSettings(), sleep=lambda _: None)
        resumed = flow.resume_all()
        (final,) = journal.refunds()
        again = flow.refund(final.acquirement_id, "KR-1", 1500, "USD")  # the cashier runs the same refund again
        steps = journal.refund_steps(MERCHANT_ID, final.acquirement_id, "KR-1")
    assert [r.state for r in resumed] == ([] if interrupted.final else ["SUCCESS"])
    assert final.state == "SUCCESS" and again == final
    payment = gateway.payments[(MERCHANT_ID, "K-R")]
    assert {k: r.amount for k, r in payment.refunds.items()} == {"KR-1": 1500}  # one refund, never two
    assert final.refund_id == payment.refunds["KR-1"].refund_id
    # every journaled attempt was sent, but the one killed between its journal line and the network
    assert gateway.stats.calls["refund"] == sum(1 for s in steps if s.phase == "before") - (event == "before")
