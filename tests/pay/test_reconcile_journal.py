"""The point of the journal: the next day's transaction file settles what the flow left unknown.

Payments made through the best-practice flow against the sandbox gateway, with faults that leave one paid
after an unknown answer, one lost then cancelled, and one charged but stuck in MANUAL. The journal becomes a
ledger; the gateway's accepted payments become the next day's B1 transaction detail file
(``ALIPAY_TRANSACTION_DETAIL_<cur>_<date>.csv``). Reconcile must pair the settled ones, say nothing about the
cancelled one (absent on both sides as money), and flag the MANUAL one as charged: the provider took the money.
Check BC-7 over the same workspace resolves the MANUAL one from the file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alirecon import pipeline
from alirecon.config import AccountConfig, WorkspaceConfig
from alirecon.formats import barcode
from alirecon.pay.ledger import journal_rows, write_journal_ledger
from alirecon.warehouse import Workspace

from . import support, test_flow
from .support import MERCHANT_ID, Sandbox
from .test_flow import Harness, order

pay_keys, sandbox, harness = support.pay_keys, support.sandbox, test_flow.harness


def test_the_next_days_file_settles_unknown_and_manual_payments(harness: Harness, sandbox: Sandbox,
                                                                tmp_path: Path) -> None:
    faults = sandbox.gateway.faults
    fast = {"query_interval": 0.1, "query_time_limit": 1, "cancel_interval": 0.1, "not_exist_interval": (0.1, 0.1)}
    assert harness.flow(**fast).pay(order("T-OK")).state == "SUCCESS"
    faults.pay_unknown = 1  # charged, answered U: the query finds it paid
    assert harness.flow(**fast).pay(order("T-UNKNOWN", 990)).state == "SUCCESS"
    faults.pay_lost = 1  # never charged: queries find nothing, the cancel closes it
    assert harness.flow(**fast).pay(order("T-LOST", 450)).state == "CANCELLED"
    faults.pay_unknown, faults.query_unknown, faults.cancel_unknown = 1, 1000, 1000  # charged, nothing confirms
    stuck = harness.flow(**fast).pay(order("T-STUCK", 700))
    assert stuck.state == "MANUAL" and stuck.reason

    # the user's side: the journal as a ledger
    ledger = write_journal_ledger(journal_rows(harness.journal, MERCHANT_ID), tmp_path / "journal.csv")
    # the provider's side: the next day's transaction detail, from what the gateway really charged
    charged = sandbox.gateway.accepted_payments()
    assert {p.merchant_trans_id for p in charged} == {"T-OK", "T-UNKNOWN", "T-STUCK"}
    day = (sandbox.clock.now() + timedelta(hours=8)).date()
    rows = [{"merchantId": p.merchant_id, "productCode": "OFFLINE_PAYMENT", "paymentTime": p.created_at,
             "orderTitle": p.order_title, "transType": "PAYMENT", "transStatus": "SUCCESS",
             "merchantTransId": p.merchant_trans_id, "acquirementId": p.acquirement_id,
             "orderAmount": p.amount, "orderCurrency": p.currency} for p in charged]
    report = tmp_path / barcode.file_name("transaction_detail", MERCHANT_ID, day, currency="USD")
    report.write_bytes(barcode.write_report("transaction_detail", rows, meta={"name_currency": "USD"}))

    config = WorkspaceConfig(ledgers=[ledger],
                             accounts=[AccountConfig(name="shop", family="barcode", account_id=MERCHANT_ID)])
    with Workspace.init(tmp_path / "ws", config) as ws:
        assert ws.ingest([report]).ok
        pipeline.ingest_ledgers(ws)
        run = pipeline.reconcile(ws)
        found = sorted((r["exception_class"], r["reason_code"], r["match_key"]) for r in run.exceptions.to_pylist())
        matched = run.counts["barcode"].get("matched", 0)
        bc7 = [(r["status"], r["reason_code"], r["scope"]) for r in pipeline.check(ws).results.to_pylist()
               if r["check_id"] == "BC-7"]
    # T-OK and T-UNKNOWN pair up; T-STUCK pairs up too, with the provider's word against the MANUAL entry;
    # T-LOST is cancelled in the ledger and absent from the file: nothing to say
    assert found == [("status_mismatch", "LEDGER_NOT_SUCCESS", "T-STUCK")]
    assert matched == 3
    # BC-7 reads the same journal against the day's file: the MANUAL one is resolved (charged), the cancelled one
    # is absent from the file as it must be, the two paid ones are in their day's file
    assert sorted(bc7) == [("pass", "JOURNAL_VS_FILES", "journal.csv"),
                           ("warn", "JOURNAL_OPEN_CHARGED", "journal.csv/T-STUCK")]

