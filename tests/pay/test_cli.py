"""``alirecon pay ...`` through typer's CliRunner against a real sandbox gateway on loopback (keys made at test
time): the flow's outcomes and exit codes, resume after a crash, the manual list, one-call commands, usage
errors, and no secret in any output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from alirecon.cli import PAY_JOURNAL_NAME, app
from alirecon.config import CONFIG_NAME, PayConfig, PayFlowConfig, WorkspaceConfig
from alirecon.pay.flow import PayJournal, PaymentRequest

from . import support
from .support import MERCHANT_ID, Sandbox

pay_keys = support.pay_keys
sandbox = support.sandbox

BUYER_CODE = "281234567890123456"  # the buyer's scanned code: a secret that must never be printed
runner = CliRunner()
# no real waiting in tests: every interval 0; limits small enough to reach MANUAL quickly
FAST_FLOW = PayFlowConfig(query_interval=0, not_exist_interval=(0, 0), cancel_interval=0, max_queries=4,
                          cancel_retries=2)


def make_workspace(root: Path, sandbox: Sandbox, flow: PayFlowConfig = FAST_FLOW, **profile: Any) -> Path:
    """A workspace whose config has only a [pay] section; the key file path is relative to the workspace."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "keys").mkdir(exist_ok=True)
    (root / "keys" / "client.pem").write_bytes(sandbox.key_file.read_bytes())
    config = WorkspaceConfig(pay=PayConfig(sandbox=sandbox.profile(private_key_file=Path("keys/client.pem"),
                                                                   **profile), flow=flow))
    config.dump(root / CONFIG_NAME)
    return root


@pytest.fixture
def ws(sandbox: Sandbox, tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "ws", sandbox)


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = run(*args, "--json")
    return result.exit_code, json.loads(result.stdout)


def create(ws: Path, trans_id: str, amount: str = "12.30", currency: str = "USD") -> tuple[int, dict[str, Any]]:
    return run_json("pay", "create", "-w", str(ws), "--trans-id", trans_id, "--amount", amount, "--currency",
                    currency, "--buyer-code", BUYER_CODE, "--title", "coffee")


def assert_no_secret(text: str, sandbox: Sandbox) -> None:
    assert BUYER_CODE not in text
    for line in support.key_lines(sandbox.keys.client):
        assert line not in text


def test_create_success_charges_once_in_exact_minor_units(ws: Path, sandbox: Sandbox) -> None:
    code, out = create(ws, "T-1", "12.30")
    assert code == 0
    payment = out["payment"]
    assert (payment["state"], payment["amount_minor"], payment["amount"], payment["currency"]) == \
        ("SUCCESS", 1230, "12.30", "USD")
    [charged] = sandbox.gateway.accepted_payments()
    assert (charged.merchant_trans_id, charged.amount) == ("T-1", 1230)
    assert charged.acquirement_id == payment["acquirement_id"]
    assert (ws / PAY_JOURNAL_NAME).is_file()
    # the same command again (a cashier's retry) resumes the journaled payment: no second charge
    code, again = create(ws, "T-1", "12.30")
    assert code == 0 and again["payment"]["acquirement_id"] == payment["acquirement_id"]
    assert sandbox.gateway.stats.charges[(MERCHANT_ID, "T-1")] == 1


def test_create_text_output_holds_no_secret(ws: Path, sandbox: Sandbox) -> None:
    result = run("pay", "create", "-w", str(ws), "--trans-id", "T-2", "--amount", "5", "--currency", "JPY",
                 "--buyer-code", BUYER_CODE, "--title", "tea")
    assert result.exit_code == 0, result.output
    assert "SUCCESS" in result.output and "T-2" in result.output
    assert_no_secret(result.output, sandbox)
    with PayJournal(ws / PAY_JOURNAL_NAME) as journal:
        record = journal.get(MERCHANT_ID, "T-2")
        assert record is not None and journal.pending_identity_code(record) is None  # erased once sent


def test_unknown_pay_is_queried_to_success(ws: Path, sandbox: Sandbox) -> None:
    sandbox.gateway.faults.pay_unknown = 1
    code, out = create(ws, "T-U")
    assert code == 0
    assert (out["payment"]["state"], out["payment"]["queries"]) == ("SUCCESS", 1)


def test_lost_pay_ends_cancelled_with_exit_1(ws: Path, sandbox: Sandbox) -> None:
    sandbox.gateway.faults.pay_lost = 1  # answered U, never charged: the queries find no order, then cancel
    code, out = create(ws, "T-LOST")
    assert code == 1
    assert (out["payment"]["state"], out["payment"]["queries"], out["payment"]["cancels"]) == ("CANCELLED", 3, 1)
    assert sandbox.gateway.accepted_payments() == []


def test_refused_pay_is_failed_with_exit_1(ws: Path, sandbox: Sandbox) -> None:
    sandbox.gateway.faults.pay_fail = 1
    code, out = create(ws, "T-F")
    assert code == 1 and out["payment"]["state"] == "FAILED"
    assert "EXPIRED_CODE" in out["payment"]["reason"]


def test_manual_list_and_resolution(ws: Path, sandbox: Sandbox) -> None:
    faults = sandbox.gateway.faults
    faults.pay_unknown, faults.query_unknown, faults.cancel_unknown = 1, 10, 10
    code, out = create(ws, "T-M")
    assert code == 1 and out["payment"]["state"] == "MANUAL"
    assert out["payment"]["cancels"] == 3  # one try + cancel_retries=2
    code, listed = run_json("pay", "manual", "-w", str(ws))
    assert code == 1
    [manual] = listed["manual"]
    assert manual["merchant_trans_id"] == "T-M" and "contact support" in manual["reason"]
    text = run("pay", "manual", "-w", str(ws))
    assert text.exit_code == 1 and "T-M" in text.output and "MANUAL" in text.output

    code, resolved = run_json("pay", "manual", "-w", str(ws), "--resolve", "T-M", "--state", "SUCCESS",
                              "--note", "support: paid, ticket 42")
    assert code == 0
    assert resolved["payment"]["state"] == "SUCCESS" and "ticket 42" in resolved["payment"]["reason"]
    code, listed = run_json("pay", "manual", "-w", str(ws))
    assert (code, listed["manual"]) == (0, [])
    # resolving again: it is no longer on the list
    assert run("pay", "manual", "-w", str(ws), "--resolve", "T-M", "--state", "CANCELLED", "--note", "x").exit_code == 2


def test_resume_after_a_crash_never_pays_twice(ws: Path, sandbox: Sandbox) -> None:
    """A process died after sending the pay but before journaling the answer: resume queries, never re-pays."""
    with PayJournal(ws / PAY_JOURNAL_NAME) as journal:
        record = journal.open(MERCHANT_ID, PaymentRequest("T-CRASH", 700, "USD", BUYER_CODE, order_title="x"),
                              support.NOW)
        journal.write(record, support.NOW, function="pay", phase="before", attempt=1, state="PAYING",
                      forget_identity_code=True)
        journal.open(MERCHANT_ID, PaymentRequest("T-NEW", 300, "USD", BUYER_CODE, order_title="y"), support.NOW)
    with sandbox.client() as client:
        assert client.pay("T-CRASH", 700, "USD", BUYER_CODE, order_title="x").status == "S"
    code, out = run_json("pay", "resume", "-w", str(ws))
    assert code == 0
    assert sorted((r["merchant_trans_id"], r["state"]) for r in out["resumed"]) == \
        [("T-CRASH", "SUCCESS"), ("T-NEW", "SUCCESS")]
    assert sandbox.gateway.stats.calls["pay"] == 2  # the test's own pay of T-CRASH, and T-NEW's
    assert sandbox.gateway.stats.charges[(MERCHANT_ID, "T-CRASH")] == 1
    code, out = run_json("pay", "resume", "-w", str(ws))
    assert (code, out["resumed"]) == (0, [])


def test_resume_exit_1_when_a_resumed_payment_does_not_succeed(ws: Path, sandbox: Sandbox) -> None:
    with PayJournal(ws / PAY_JOURNAL_NAME) as journal:
        record = journal.open(MERCHANT_ID, PaymentRequest("T-GONE", 700, "USD", BUYER_CODE, order_title="x"),
                              support.NOW)
        journal.write(record, support.NOW, function="pay", phase="before", attempt=1, state="PAYING",
                      forget_identity_code=True)  # the pay never left the process: the order does not exist
    code, out = run_json("pay", "resume", "-w", str(ws))
    assert code == 1 and [r["state"] for r in out["resumed"]] == ["CANCELLED"]


def test_resume_finishes_an_interrupted_refund_once(ws: Path, sandbox: Sandbox) -> None:
    _, paid = create(ws, "T-RR", "10.00")
    acquirement_id = paid["payment"]["acquirement_id"]
    with PayJournal(ws / PAY_JOURNAL_NAME) as journal:  # journaled and sent, the answer never journaled
        record = journal.open_refund(MERCHANT_ID, acquirement_id, "R-CRASH", 300, "USD", None, support.NOW)
        journal.write_refund(record, support.NOW, phase="before", attempt=1, state="REFUNDING", attempts=1)
    with sandbox.client() as client:
        assert client.refund(acquirement_id, "R-CRASH", 300, "USD").status == "S"
    code, out = run_json("pay", "resume", "-w", str(ws))
    assert (code, out["resumed"]) == (0, [])
    assert [(r["merchant_refund_id"], r["state"], r["merchant_trans_id"]) for r in out["refunds"]] == [
        ("R-CRASH", "SUCCESS", "T-RR")]
    [payment] = sandbox.gateway.accepted_payments()
    assert payment.refunded == 300
    ledger = ws / "ledger.csv"
    code, written = run_json("pay", "ledger", "-w", str(ws), "--out", str(ledger))
    assert code == 0 and (written["rows"], written["refunds"]) == (2, 1)


def test_query_cancel_refund_one_call_each(ws: Path, sandbox: Sandbox) -> None:
    _, paid = create(ws, "T-R", "10.00")
    acquirement_id = paid["payment"]["acquirement_id"]
    w = ("-w", str(ws))
    code, out = run_json("pay", "query", *w, "--trans-id", "T-R")
    assert code == 0 and (out["result"]["acquirementStatus"], out["result"]["acquirementId"]) == \
        ("SUCCESS", acquirement_id)
    refund = ("pay", "refund", *w, "--acquirement-id", acquirement_id, "--refund-id", "R-1", "--amount", "4.00",
              "--currency", "USD")
    code, first = run_json(*refund)
    assert code == 0 and (first["refund"]["state"], first["refund"]["merchant_trans_id"]) == ("SUCCESS", "T-R")
    code, retry = run_json(*refund)  # the same merchantRefundId: the journaled refund, not a second one
    assert code == 0 and retry["refund"]["refund_id"] == first["refund"]["refund_id"]
    [payment] = sandbox.gateway.accepted_payments()
    assert payment.refunded == 400 and sandbox.gateway.stats.calls["refund"] == 1
    # more than what is left of the journaled payment: refused before anything is sent
    code, over = run_json("pay", "refund", *w, "--acquirement-id", acquirement_id, "--refund-id", "R-2",
                          "--amount", "6.01", "--currency", "USD")
    assert code == 2 and over["error"] == "PayError" and "more than its 1000" in over["message"]
    assert sandbox.gateway.stats.calls["refund"] == 1
    code, cancel = run_json("pay", "cancel", *w, "--acquirement-id", acquirement_id)  # refunded: not cancellable
    assert code == 1 and cancel["result"]["status"] == "F"
    assert sandbox.gateway.stats.calls["payQuery"] == 1 and sandbox.gateway.stats.calls["payCancel"] == 1


def test_cancel_after_success_marks_the_journal(ws: Path, sandbox: Sandbox) -> None:
    create(ws, "T-C")
    code, out = run_json("pay", "cancel", "-w", str(ws), "--trans-id", "T-C")
    assert code == 0 and out["result"]["status"] == "S"
    assert sandbox.gateway.accepted_payments() == []
    with PayJournal(ws / PAY_JOURNAL_NAME) as journal:
        record = journal.get(MERCHANT_ID, "T-C")
        assert record is not None and record.state == "CANCELLED"


def test_cancel_unknown_exit_1(ws: Path, sandbox: Sandbox) -> None:
    sandbox.gateway.faults.cancel_unknown = 1
    code, out = run_json("pay", "cancel", "-w", str(ws), "--trans-id", "T-NONE")
    assert code == 1 and out["result"]["status"] == "U"


@pytest.mark.parametrize("args", [
    ("create", "--trans-id", "T", "--amount", "12.345", "--currency", "USD", "--buyer-code", "c", "--title", "t"),
    ("create", "--trans-id", "T", "--amount", "1.5", "--currency", "JPY", "--buyer-code", "c", "--title", "t"),
    ("create", "--trans-id", "T", "--amount", "0", "--currency", "USD", "--buyer-code", "c", "--title", "t"),
    ("create", "--trans-id", "T", "--amount", "1e3", "--currency", "USD", "--buyer-code", "c", "--title", "t"),
    ("create", "--trans-id", "T", "--amount", "1", "--currency", "XXQ", "--buyer-code", "c", "--title", "t"),
    ("query",),
    ("cancel",),
    ("manual", "--resolve", "T"),
    ("manual", "--resolve", "T", "--state", "FAILED", "--note", "n"),
    ("manual", "--resolve", "T", "--state", "SUCCESS"),
    ("manual", "--state", "SUCCESS"),
    ("refund", "--acquirement-id", "A", "--refund-id", "R", "--amount", "-1", "--currency", "USD"),
])
def test_usage_errors_exit_2_and_call_nothing(ws: Path, sandbox: Sandbox, args: tuple[str, ...]) -> None:
    result = run("pay", *args, "-w", str(ws))
    assert result.exit_code == 2, result.output
    assert sandbox.gateway.stats.requests == 0


def test_same_trans_id_other_amount_is_refused(ws: Path, sandbox: Sandbox) -> None:
    assert create(ws, "T-1", "1.00")[0] == 0
    code, out = create(ws, "T-1", "2.00")
    assert code == 2 and out["error"] == "PayError"
    assert sandbox.gateway.stats.charges[(MERCHANT_ID, "T-1")] == 1


def test_config_errors_exit_2(sandbox: Sandbox, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    WorkspaceConfig().dump(bare / CONFIG_NAME)
    code, out = run_json("pay", "resume", "-w", str(bare))
    assert code == 2 and "[pay]" in out["message"]
    code, out = run_json("pay", "resume", "-w", str(tmp_path / "nowhere"))
    assert code == 2 and out["error"] == "ConfigError"
    # a sandbox profile aimed at a production host is refused before anything is sent (barcode.md 10.7)
    wrong = make_workspace(tmp_path / "wrong", sandbox,
                           endpoint="https://open-sea.alipay.com/api/alipay/intl/acquiring")
    code, out = run_json("pay", "query", "-w", str(wrong), "--trans-id", "T")
    assert code == 2 and out["error"] == "PayConfigError"
    missing_key = make_workspace(tmp_path / "nokey", sandbox)
    (missing_key / "keys" / "client.pem").unlink()
    result = run("pay", "query", "-w", str(missing_key), "--trans-id", "T", "--json")
    assert result.exit_code == 2
    assert_no_secret(result.output, sandbox)
    assert sandbox.gateway.stats.requests == 0


def test_flow_settings_come_from_the_config(sandbox: Sandbox, tmp_path: Path) -> None:
    """pay.flow overrides FlowSettings: with max_queries=1 an unresolved query goes to cancel after one try."""
    ws = make_workspace(tmp_path / "ws", sandbox, PayFlowConfig(query_interval=0, max_queries=1,
                                                                not_exist_interval=(0, 0), cancel_interval=0))
    sandbox.gateway.faults.pay_unknown, sandbox.gateway.faults.query_unknown = 1, 5
    code, out = create(ws, "T-Q")
    assert code == 1 and (out["payment"]["state"], out["payment"]["queries"]) == ("CANCELLED", 1)


def test_cancel_by_acquirement_id_marks_the_journal(ws: Path, sandbox: Sandbox) -> None:
    _, paid = create(ws, "T-CA")
    code, _ = run_json("pay", "cancel", "-w", str(ws), "--acquirement-id", paid["payment"]["acquirement_id"])
    assert code == 0
    with PayJournal(ws / PAY_JOURNAL_NAME) as journal:
        record = journal.get(MERCHANT_ID, "T-CA")
        assert record is not None and record.state == "CANCELLED" and "pay cancel" in (record.reason or "")


def test_bad_flow_settings_are_config_errors(sandbox: Sandbox, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws", sandbox)
    text = (ws / CONFIG_NAME).read_text(encoding="utf-8")
    assert text.count("max_queries = 4") == 1
    (ws / CONFIG_NAME).write_text(text.replace("max_queries = 4", "max_queries = 0"), encoding="utf-8")
    code, out = run_json("pay", "resume", "-w", str(ws))
    assert code == 2 and out["error"] == "ConfigError" and "max_queries" in out["message"]
    with pytest.raises(ValueError, match="low <= high"):
        PayFlowConfig(not_exist_interval=(7, 5))
    assert PayFlowConfig(max_queries=3).overrides() == {"max_queries": 3}
