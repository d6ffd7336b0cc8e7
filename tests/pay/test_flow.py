"""The best-practice flow (barcode.md 10.5) against the sandbox gateway: every branch under injected faults, the
journal, and a property test over random fault sequences (never charged twice; always a final state)."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alirecon.pay.client import ORDER_NOT_EXIST, PayClient, PayError
from alirecon.pay.flow import FINAL_STATES, FlowSettings, PayFlow, PayJournal, PaymentRecord, PaymentRequest

from . import support
from .support import MERCHANT_ID, Sandbox

pay_keys = support.pay_keys
sandbox = support.sandbox


@dataclass
class Sleeps:
    """The injected sleep: records each wait and moves the simulated clock instead of waiting."""

    sandbox: Sandbox
    waits: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.sandbox.clock.advance(timedelta(seconds=seconds))


@dataclass
class Harness:
    sandbox: Sandbox
    journal: PayJournal
    sleeps: Sleeps

    clients: dict[object, PayClient] = field(default_factory=dict)

    def flow(self, **settings_: object) -> PayFlow:
        timeout = settings_.pop("timeout", 5.0)
        if timeout not in self.clients:  # loading a key costs ~50 ms: one client per timeout
            self.clients[timeout] = self.sandbox.client(timeout=timeout)
        client = self.clients[timeout]
        return PayFlow(client, self.journal, FlowSettings(**settings_),  # type: ignore[arg-type]
                       sleep=self.sleeps, now=self.sandbox.clock.now, rng=random.Random(7))

    def charges(self, trans_id: str) -> int:
        return self.sandbox.gateway.stats.charges[(MERCHANT_ID, trans_id)]

    def accepted(self) -> set[str]:
        return {p.merchant_trans_id for p in self.sandbox.gateway.accepted_payments()}


@pytest.fixture
def harness(sandbox: Sandbox, tmp_path: Path) -> Iterator[Harness]:
    with PayJournal(tmp_path / "pay.sqlite") as journal:
        yield Harness(sandbox, journal, Sleeps(sandbox))


def order(trans_id: str, amount: int = 1250, currency: str = "USD") -> PaymentRequest:
    return PaymentRequest(trans_id, amount, currency, "281234567890123456", "lunch")


def calls(h: Harness, trans_id: str) -> list[str]:
    return [f"{s.function}:{s.status}" for s in h.journal.steps(MERCHANT_ID, trans_id) if s.phase == "after"]


def test_a_clean_payment_succeeds_in_one_call(harness: Harness) -> None:
    record = harness.flow().pay(order("F-1"))
    assert (record.state, record.acquirement_id is not None) == ("SUCCESS", True)
    phases = [(s.function, s.phase) for s in harness.journal.steps(MERCHANT_ID, "F-1")]
    assert phases == [("flow", "note"), ("pay", "before"), ("pay", "after")]
    assert harness.accepted() == {"F-1"} and harness.sleeps.waits == []


def test_pay_u_is_settled_by_a_query(harness: Harness) -> None:
    harness.sandbox.gateway.faults.pay_unknown = 1
    record = harness.flow().pay(order("F-2"))
    assert record.state == "SUCCESS" and record.queries == 1
    assert calls(harness, "F-2") == ["pay:U", "payQuery:S"]
    assert harness.charges("F-2") == 1


def test_order_not_exist_is_queried_twice_more_at_five_to_seven_seconds(harness: Harness) -> None:
    harness.sandbox.gateway.faults.pay_unknown, harness.sandbox.gateway.faults.order_not_exist = 1, 2
    record = harness.flow().pay(order("F-3"))
    assert record.state == "SUCCESS" and record.not_exist == 2
    assert calls(harness, "F-3") == ["pay:U", "payQuery:F", "payQuery:F", "payQuery:S"]
    assert len(harness.sleeps.waits) == 2 and all(5 <= w <= 7 for w in harness.sleeps.waits)


def test_order_not_exist_three_times_cancels(harness: Harness) -> None:
    harness.sandbox.gateway.faults.pay_lost = 1
    record = harness.flow().pay(order("F-4"))
    assert (record.state, record.not_exist, record.queries, record.cancels) == ("CANCELLED", 3, 3, 1)
    assert record.last_code == "SUCCESS" and "F-4" not in harness.accepted()


def test_a_pay_past_the_client_timeout_is_queried_then_cancelled_and_never_charged(harness: Harness) -> None:
    gateway = harness.sandbox.gateway
    gateway.faults.latency, gateway.faults.latency_calls = 0.6, 1
    record = harness.flow(timeout=0.1).pay(order("F-5"))
    assert record.state == "CANCELLED"
    assert [s.code for s in harness.journal.steps(MERCHANT_ID, "F-5") if s.function == "payQuery" and s.code] \
        == [ORDER_NOT_EXIST] * 3
    time.sleep(0.8)  # the late pay reaches the provider after the cancel: it is refused, not charged
    assert gateway.stats.answers["pay F ORDER_STATUS_INVALID"] == 1
    assert harness.charges("F-5") == 0 and not harness.accepted()


def test_the_query_count_limit_leads_to_cancel(harness: Harness) -> None:
    harness.sandbox.gateway.faults.pay_unknown, harness.sandbox.gateway.faults.query_unknown = 1, 99
    record = harness.flow(max_queries=4, query_interval=2).pay(order("F-6"))
    assert (record.state, record.queries) == ("CANCELLED", 4)
    assert harness.sleeps.waits == [2, 2, 2]
    assert harness.charges("F-6") == 1 and not harness.accepted()  # charged, then cancelled = refunded


def test_the_query_time_limit_leads_to_cancel(harness: Harness) -> None:
    harness.sandbox.gateway.faults.pay_unknown, harness.sandbox.gateway.faults.query_unknown = 1, 99
    record = harness.flow(query_interval=20, query_time_limit=30).pay(order("F-7"))
    assert (record.state, record.queries) == ("CANCELLED", 2)  # at 0 s and 20 s; 40 s is past the limit


def test_cancel_u_is_retried_until_it_succeeds(harness: Harness) -> None:
    faults = harness.sandbox.gateway.faults
    faults.pay_unknown, faults.query_unknown, faults.cancel_unknown = 1, 99, 2
    record = harness.flow(max_queries=1, cancel_interval=3).pay(order("F-8"))
    assert (record.state, record.cancels) == ("CANCELLED", 3)
    assert harness.sleeps.waits == [3, 3]


@pytest.mark.parametrize("retries", [3, 5])
def test_cancel_still_u_goes_manual_with_the_reason(harness: Harness, retries: int) -> None:
    faults = harness.sandbox.gateway.faults
    faults.pay_unknown, faults.query_unknown, faults.cancel_unknown = 1, 99, 99
    record = harness.flow(max_queries=1, cancel_retries=retries).pay(order("F-9"))
    assert (record.state, record.cancels) == ("MANUAL", retries + 1)
    assert record.reason is not None and f"after {retries + 1} attempts" in record.reason
    assert [p.merchant_trans_id for p in harness.journal.payments("MANUAL")] == ["F-9"]


def test_cancel_f_goes_manual_at_once(harness: Harness) -> None:
    faults = harness.sandbox.gateway.faults
    faults.pay_unknown, faults.query_unknown, faults.cancel_fail = 1, 99, 1
    record = harness.flow(max_queries=1).pay(order("F-10"))
    assert (record.state, record.cancels) == ("MANUAL", 1)
    assert record.reason is not None and "PROCESS_FAIL" in record.reason
    resolved = harness.journal.resolve_manual(MERCHANT_ID, "F-10", "SUCCESS", "support confirmed the charge")
    assert resolved.state == "SUCCESS" and not harness.journal.payments("MANUAL")


def test_pay_f_fails(harness: Harness) -> None:
    harness.sandbox.gateway.faults.pay_fail = 1
    record = harness.flow().pay(order("F-11"))
    assert record.state == "FAILED" and record.reason is not None and "EXPIRED_CODE" in record.reason


def test_a_refused_payment_found_by_query_fails(harness: Harness) -> None:
    harness.sandbox.gateway.faults.pay_fail, harness.sandbox.gateway.faults.broken_signature = 1, 1
    record = harness.flow().pay(order("F-12"))
    assert record.state == "FAILED" and calls(harness, "F-12") == ["pay:U", "payQuery:S"]


def test_a_journaled_key_is_never_paid_again(harness: Harness) -> None:
    flow = harness.flow()
    first = flow.pay(order("F-13"))
    again = flow.pay(order("F-13"))
    assert first.state == again.state == "SUCCESS"
    assert harness.sandbox.gateway.stats.calls["pay"] == 1
    with pytest.raises(PayError, match="another amount"):
        flow.pay(order("F-13", amount=1251))


def test_the_buyer_code_leaves_the_journal_once_the_pay_is_sent(harness: Harness) -> None:
    harness.flow().pay(order("F-14"))
    with sqlite3.connect(harness.journal.path) as con:
        assert con.execute("SELECT identity_code FROM payments").fetchall() == [(None,)]
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="negative"):
        FlowSettings(cancel_retries=-1)
    with pytest.raises(ValueError, match="low, high"):
        FlowSettings(not_exist_interval=(7, 5))


_FAULTS = st.fixed_dictionaries({
    "pay_unknown": st.integers(0, 1), "pay_lost": st.integers(0, 1), "pay_fail": st.integers(0, 1),
    "order_not_exist": st.integers(0, 4), "query_unknown": st.integers(0, 12), "cancel_unknown": st.integers(0, 7),
    "cancel_fail": st.integers(0, 1), "broken_signature": st.integers(0, 4),
})


@settings(max_examples=40)
@given(faults=_FAULTS, max_queries=st.integers(1, 6), cancel_retries=st.integers(3, 5))
def test_any_fault_sequence_ends_known_and_never_charges_twice(harness: Harness, faults: dict[str, int],
                                                                max_queries: int, cancel_retries: int) -> None:
    gateway = harness.sandbox.gateway
    for name, value in faults.items():
        setattr(gateway.faults, name, value)
    trans_id = f"P-{gateway.stats.requests}-{sorted(faults.items())}"[:64]
    record: PaymentRecord = harness.flow(max_queries=max_queries, cancel_retries=cancel_retries).pay(order(trans_id))
    assert record.state in FINAL_STATES
    assert record.state == "SUCCESS" or record.reason
    assert harness.charges(trans_id) <= 1
    if record.state == "SUCCESS":
        assert trans_id in harness.accepted()
    elif record.state in ("CANCELLED", "FAILED"):
        assert trans_id not in harness.accepted()
    assert record.queries <= max_queries and record.cancels <= cancel_retries + 1
