"""A payment flow run in a child process that SIGKILLs itself at a chosen journal event (test_kill.py).

Usage: python -m tests.pay.kill_worker '<json>' with journal, endpoint, key_file, alipay_public_key, client_id,
merchant_id, trans_id, max_queries and kill = [event, function, nth] (the nth time the flow reports it).
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
from alirecon.pay.flow import FlowSettings, PayFlow, PayJournal, PaymentRecord, PaymentRequest


def main(spec: dict[str, object]) -> None:
    kill = spec["kill"]
    assert isinstance(kill, list)
    event, function, nth = kill
    seen: Counter[tuple[str, str]] = Counter()

    def observer(happened: str, called: str, record: PaymentRecord) -> None:
        seen[(happened, called)] += 1
        if (happened, called) == (event, function) and seen[(happened, called)] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    profile = PayProfile(environment="sandbox", endpoint=str(spec["endpoint"]), client_id=str(spec["client_id"]),
                         merchant_id=str(spec["merchant_id"]), private_key_file=Path(str(spec["key_file"])),
                         alipay_public_key=str(spec["alipay_public_key"]), timeout=5.0)
    with PayClient(profile) as client, PayJournal(Path(str(spec["journal"]))) as journal:
        flow = PayFlow(client, journal, FlowSettings(max_queries=int(str(spec["max_queries"]))),
                       sleep=lambda _: None, observer=observer)
        flow.pay(PaymentRequest(str(spec["trans_id"]), 4200, "USD", "281234567890123456", "dinner"))
    print("finished without being killed")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
