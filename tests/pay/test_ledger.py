"""The payment journal as a ledger (pay/ledger.py): the rows of a flow run under faults, the CSV read back through
the ledger reader, an exactness property over amounts and currencies, and ``alirecon pay ledger``."""

from __future__ import annotations

import json
import random
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from alirecon.cli import PAY_JOURNAL_NAME, app
from alirecon.config import LedgerConfig
from alirecon.formats.engine import extras_dict
from alirecon.ledger import read_ledger
from alirecon.pay.flow import FlowSettings, PayFlow, PayJournal, PaymentRequest
from alirecon.pay.ledger import HEADER, journal_ledger_config, journal_rows, write_journal_ledger

from . import support
from .support import MERCHANT_ID, NOW, OTHER_MERCHANT_ID, Sandbox

pay_keys = support.pay_keys
sandbox = support.sandbox

CODE = "280000000000000001"


def run_flow(sandbox: Sandbox, journal: PayJournal) -> dict[str, str]:
    """Six payments, one per outcome; returns each one's acquirementId at the gateway (if charged)."""
    clock = sandbox.clock

    def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))

    faults = sandbox.gateway.faults
    with sandbox.client() as client:
        flow = PayFlow(client, journal, FlowSettings(query_interval=1, not_exist_interval=(1, 1), cancel_interval=1,
                                                     cancel_retries=2),
                       sleep=sleep, now=clock.now, rng=random.Random(1))

        def pay(trans_id: str, amount: int, currency: str = "USD") -> None:
            clock.advance(timedelta(minutes=1))
            flow.pay(PaymentRequest(trans_id, amount, currency, CODE, order_title="t"))

        pay("P-OK", 1230)
        faults.pay_unknown = 1  # charged but answered U: the query finds it paid
        pay("P-U", 500, "JPY")
        faults.pay_lost = 1  # answered U, never charged: ORDER_NOT_EXIST three times, then cancelled
        pay("P-CANCEL", 250)
        faults.pay_fail = 1
        pay("P-FAIL", 999)
        faults.pay_unknown, faults.query_unknown, faults.cancel_unknown = 1, 100, 100
        pay("P-MANUAL", 4200)
        faults.query_unknown = faults.cancel_unknown = 0
    clock.advance(timedelta(minutes=1))
    # a process that died after sending its pay and was not resumed yet
    record = journal.open(MERCHANT_ID, PaymentRequest("P-OPEN", 7, "KWD", CODE, order_title="t"), clock.now())
    journal.write(record, clock.now(), function="pay", phase="before", attempt=1, state="PAYING",
                  forget_identity_code=True)
    return {p.merchant_trans_id: p.acquirement_id or "" for p in sandbox.gateway.payments.values()}


def test_rows_of_a_flow_run_with_unknowns_and_a_cancel(sandbox: Sandbox, tmp_path: Path) -> None:
    with PayJournal(tmp_path / PAY_JOURNAL_NAME) as journal:
        acquired = run_flow(sandbox, journal)
        rows = journal_rows(journal)
        assert journal_rows(journal, OTHER_MERCHANT_ID) == []
    picked = [(r["merchant_ref_id"], r["provider_txn_id"], r["record_type"], r["amount"], r["currency"], r["status"],
               r["pay_state"], r["merchant_id"], r["occurred_at"]) for r in rows]
    # occurred_at is when the payment was journaled: each pay starts a minute after the previous one ended;
    # the flow's 1 s sleeps in between move the clock: P-CANCEL 2 (two more queries), P-MANUAL 9 + 2 (queries
    # 2..10 of max_queries=10, cancels 2..3 of 1 + cancel_retries=2)
    at = [NOW + timedelta(minutes=m, seconds=s) for m, s in ((1, 0), (2, 0), (3, 0), (4, 2), (5, 2), (6, 13))]
    assert picked == [
        ("P-OK", acquired["P-OK"], "PAYMENT", 1230, "USD", "SUCCESS", "SUCCESS", MERCHANT_ID, at[0]),
        ("P-U", acquired["P-U"], "PAYMENT", 500, "JPY", "SUCCESS", "SUCCESS", MERCHANT_ID, at[1]),
        ("P-CANCEL", None, "PAYMENT", 250, "USD", "CANCELLED", "CANCELLED", MERCHANT_ID, at[2]),
        ("P-FAIL", None, "PAYMENT", 999, "USD", "FAILED", "FAILED", MERCHANT_ID, at[3]),
        ("P-MANUAL", None, "PAYMENT", 4200, "USD", "MANUAL", "MANUAL", MERCHANT_ID, at[4]),
        ("P-OPEN", None, "PAYMENT", 7, "KWD", "UNKNOWN", "PAYING", MERCHANT_ID, at[5]),
    ]
    assert acquired["P-OK"] and acquired["P-U"] and acquired["P-OK"] != acquired["P-U"]
    assert "contact support" in rows[4]["reason"] and rows[2]["reason"] == "cancelled"
    # the gateway charged P-MANUAL (its pay answered U, no query or cancel got through): the next day's settlement
    # will list it while the ledger says MANUAL, a status mismatch reconcile reports for the person deciding
    assert [p.merchant_trans_id for p in sandbox.gateway.accepted_payments()] == ["P-OK", "P-U", "P-MANUAL"]


def test_the_csv_reads_back_through_the_ledger_reader(sandbox: Sandbox, tmp_path: Path,
                                                      con: duckdb.DuckDBPyConnection) -> None:
    with PayJournal(tmp_path / PAY_JOURNAL_NAME) as journal:
        run_flow(sandbox, journal)
        rows = journal_rows(journal)
    out = tmp_path / "journal.csv"
    config = write_journal_ledger(rows, out)
    assert config == journal_ledger_config(out)
    assert out.read_text(encoding="utf-8").splitlines()[0] == ",".join(HEADER)
    with read_ledger(out, config, con) as parsed:
        assert parsed.ok, [str(p) for p in parsed.problems]
        lines = parsed.lines_arrow().to_pylist()
    assert [(x["family"], x["merchant_ref_id"], x["provider_txn_id"], x["record_type"], x["amount_minor"],
             x["amount_currency"], x["status"], x["ledger_row"]) for x in lines] == [
        ("barcode", r["merchant_ref_id"], r["provider_txn_id"], "PAYMENT", r["amount"], r["currency"], r["status"], i)
        for i, r in enumerate(rows, start=2)]
    assert [x["occurred_at"] for x in lines] == [r["occurred_at"] for r in rows]
    assert [extras_dict(x["extras"], parsed.extras_names)["pay_state"] for x in lines] == [r["pay_state"] for r in rows]


CURRENCIES = ("USD", "JPY", "KWD", "CNY", "THB")


@given(st.lists(st.tuples(st.integers(1, 10**12), st.sampled_from(CURRENCIES),
                          st.sampled_from(("SUCCESS", "FAILED", "CANCELLED", "MANUAL", "QUERYING"))),
                min_size=1, max_size=8))
def test_amounts_survive_the_csv_exactly(tmp_path_factory: Any, payments: list[tuple[int, str, str]]) -> None:
    root = tmp_path_factory.mktemp("prop")
    with PayJournal(root / PAY_JOURNAL_NAME) as journal:
        for i, (amount, currency, state) in enumerate(payments):
            record = journal.open(MERCHANT_ID, PaymentRequest(f"T{i}", amount, currency, CODE, order_title="t"), NOW)
            journal.write(record, NOW, function="flow", phase="note", state=state)
        rows = journal_rows(journal)
    config = write_journal_ledger(rows, root / "l.csv")
    with read_ledger(root / "l.csv", config) as parsed:
        assert parsed.ok, [str(p) for p in parsed.problems]
        got = [(x["amount_minor"], x["amount_currency"], x["status"]) for x in parsed.lines_arrow().to_pylist()]
    expected_status = {"QUERYING": "UNKNOWN"}
    assert got == [(a, c, expected_status.get(s, s)) for a, c, s in payments]


def test_cli_pay_ledger(sandbox: Sandbox, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    with PayJournal(ws / PAY_JOURNAL_NAME) as journal:
        run_flow(sandbox, journal)
    runner = CliRunner()
    out = tmp_path / "ledger.csv"
    result = runner.invoke(app, ["pay", "ledger", "-w", str(ws), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["rows"], report["statuses"]) == (6, {"SUCCESS": 2, "CANCELLED": 1, "FAILED": 1, "MANUAL": 1,
                                                        "UNKNOWN": 1})
    entry = LedgerConfig.model_validate(report["ledger"])
    assert entry == journal_ledger_config(out)
    text = runner.invoke(app, ["pay", "ledger", "-w", str(ws), "--out", str(out), "--merchant-id", OTHER_MERCHANT_ID])
    assert text.exit_code == 0 and "0 payments" in text.output
    snippet = text.output.split("reconcile them:", 1)[1]
    assert LedgerConfig.model_validate(tomllib.loads(snippet)["ledgers"][0]) == journal_ledger_config(out)
    assert out.read_text(encoding="utf-8").strip() == ",".join(HEADER)  # no row of another merchant
    assert runner.invoke(app, ["pay", "ledger", "-w", str(ws), "--out", str(tmp_path / "l.txt")]).exit_code == 2
    assert runner.invoke(app, ["pay", "ledger", "-w", str(tmp_path), "--out", str(out)]).exit_code == 2
