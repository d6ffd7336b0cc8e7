"""A payment flow run in a child process that SIGKILLs itself at a chosen journal event (test_kill.py).

Usage: python -m tests.pay.kill_worker '<json>' with journal, endpoint, key_file, alipay_public_key, client_id,
merchant_id, trans_id, max_queries and kill = [event, function, nth] (the nth time the flow reports it). With
``refund`` = [merchantRefundId, amount] the payment is made first and then refunded through the journal; kill
names a refund event then (function ``refund``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from alirecon.config import PayProfile
from alirecon.pay.client import PayClient
from alirecon.pay.flow import FlowSettings, PayFlow, PayJournal, PaymentRecord, PaymentRequest, RefundRecord
from alirecon.pay.refund import RefundFlow


def main(spec: dict[str, object]) -> None:
    kill = spec["kill"]
    assert isinstance(kill, list)
    event, function, nth = kill
    seen: Counter[tuple[str, str]] = Counter()

    def hit(happened: str, called: str) -> None:
        seen[(happened, called)] += 1
        if (happened, called) == (event, function) and seen[(happened, called)] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    def observer(happened: str, called: str, record: PaymentRecord) -> None:
        hit(happened, called)

    def refund_observer(happened: str, record: RefundRecord) -> None:
        hit(happened, "refund")

    profile = PayProfile(environment="sandbox", endpoint=str(spec["endpoint"]), client_id=str(spec["client_id"]),
                         merchant_id=str(spec["merchant_id"]), private_key_file=Path(str(spec["key_file"])),
                         alipay_public_key=str(spec["alipay_public_key"]), timeout=5.0)
    with PayClient(profile) as client, PayJournal(Path(str(spec["journal"]))) as journal:
        settings = FlowSettings(max_queries=int(str(spec["max_queries"])))
        flow = PayFlow(client, journal, settings, sleep=lambda _: None, observer=observer)
        record = flow.pay(PaymentRequest(str(spec["trans_id"]), 4200, "USD", "281234567890123456", "dinner"))
        if spec.get("refund"):
            refund = spec["refund"]
            assert isinstance(refund, list)
            refund_id, amount = refund
            assert record.acquirement_id is not None
            RefundFlow(client, journal, settings, sleep=lambda _: None, observer=refund_observer).refund(
                record.acquirement_id, str(refund_id), int(amount), "USD")
    print("finished without being killed")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
