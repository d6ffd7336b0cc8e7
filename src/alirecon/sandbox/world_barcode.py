"""The sandbox world's barcode (in-store) merchant: payments through the real flow, then the next day's files.

Why: issue 5 is done when a merchant's day with injected faults ends with every payment in a known state,
matched against the next day's files. So the payments really go through ``pay.flow.PayFlow`` and the sandbox
payment gateway (real HTTP, real RSA2 both ways): on the first day every fault of ``PLAN`` once, then two
ordinary payments on each later day of the world (so every day has its daily files); the
gateway's own records of what it charged become the next day's B1 files (family B1, barcode.md 3:
``ALIPAY_TRANSACTION_DETAIL_*``, ``ALIPAY_SETTLEMENT_DETAIL_*``, ``ALIPAY_SETTLEMENT_SUMMARY_*``, the family the
reconcile default ``match_reports.barcode = ["transaction_detail"]`` keys on merchantTransId), written through
``formats.barcode`` and published on the sandbox SFTP server while it runs (``ProviderTree.add``); the journal
becomes the merchant's ledger (``pay.ledger``).

The truth is derived from the gateway's records and the journal's final states, never from the matcher: per
payment, charged (the gateway says SUCCESS, so the files list it) or not, against the ledger status the journal
gives it (match.py rules 6-7: a charged payment whose ledger status is not successful is ``status_mismatch``
``LEDGER_NOT_SUCCESS``; a payment nobody charged and nobody booked as paid is nothing).

Facts the generator rests on [inferred, each a constant here or a setting on the reading side]:
- B1 publication time: barcode.md 3 says only "daily"; family A's files appear 09:00-10:00 UTC+8 on T+1 (2.1),
  so the B1 files of T are published at 09:00 UTC+8 on T+1 (``PUBLISH_TIME``).
- Settlement day: family A settles Friday-Sunday on Monday (2.1), i.e. a business day settles itself; the
  settlement files of settlement day S are dated S and hold every payment it settles (``settlement_day``).
- Client timeout and gateway latency are real seconds (``CLIENT_TIMEOUT``, ``LATENCY``: one delayed pay costs
  about a second); the flow's own waits are simulated (``_SimSleep``).
- Fee: a percentage of the order amount (``FEE_PCT``), written negative = charged in the settlement detail, as
  the summary's commission in the documented sample (3.3); settlement = amount + fee (BC-2, BC-4).
- Remote directory: ``/download/<merchantId>/<date>`` (3; ``config.DEFAULT_DIRECTORIES``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time as time_mod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..clock import UTC8, add_business_days
from ..config import DEFAULT_DIRECTORIES, AccountConfig, LedgerConfig, PayConfig, PayFlowConfig, PayProfile
from ..formats import barcode
from ..pay.client import PayClient
from ..pay.flow import FlowSettings, PayFlow, PayJournal, PaymentRecord, PaymentRequest, State
from ..pay.ledger import LEDGER_STATUS, journal_ledger_config, journal_rows, write_journal_ledger
from .clock import SimClock
from .model import Account, pct
from .pay_gateway import GatewayPayment, PayFaults, PayGateway
from .sftp_server import ProviderTree, RemoteFile

__all__ = ["BARCODE_MERCHANT", "PLAN", "BarcodeDay", "BarcodeMerchant", "NextDayPublisher", "PlannedPayment",
           "expected_findings", "pay_toml", "plan_payments", "render_files", "settlement_day"]

log = logging.getLogger("alirecon.sandbox")

BARCODE_MERCHANT = Account("barcode", "2188120000006240", "MERCHANT", "USD", ("USD",))
CLIENT_ID = "2188400000006240"  # head.clientId, issued by Alipay (barcode.md 10.1)
JOURNAL_NAME = "pay_journal.sqlite"  # where ``alirecon pay`` keeps the journal (cli.PAY_JOURNAL_NAME)
LEDGER_NAME = "pay_journal.csv"
KEY_FILE = "pay/client-key.pem"  # relative to the workspace, as a user's pay profile would name it
PUBLISH_TIME = time(9)  # [inferred] module docstring
FEE_PCT = Decimal("1.8")  # any rate works: the files carry the figures
PRODUCT_CODE = "GlobalOfflineAcquire"  # barcode.md 3.1 #4
USER_SITE = "ALIPAY_CN"  # barcode.md 3.1 #15
CLIENT_TIMEOUT = 0.5  # seconds: the profile's timeout, so a pay delayed by LATENCY is an unknown outcome
LATENCY = 1.0  # real seconds the gateway holds the delayed pay
# The flow's intervals: barcode.md 10.5 (5-7 s after ORDER_NOT_EXIST, two more queries, three more cancels);
# a 20 s query limit so one payment's query window passes in four queries (simulated seconds: no real wait).
FLOW = PayFlowConfig(query_interval=5.0, max_queries=10, query_time_limit=20.0, not_exist_retries=2,
                     not_exist_interval=(5.0, 7.0), cancel_retries=3, cancel_interval=5.0)

# fault -> (short label, what happens, the final state the flow must reach, whether the gateway keeps the money)
PLAN: dict[str, tuple[str, str, str, bool]] = {
    "none": ("-", "paid at once", "SUCCESS", True),
    "timeout": ("pay timeout", "the pay is answered after the client's timeout; the first query overtakes it "
                "(ORDER_NOT_EXIST), a later one finds it paid", "SUCCESS", True),
    "unknown_not_exist": ("pay U, not exist", "pay U (charged), payQuery ORDER_NOT_EXIST once, then paid", "SUCCESS",
                          True),
    "refused": ("pay F", "pay F EXPIRED_CODE: never charged", "FAILED", False),
    "lost_not_exist": ("lost, not exist x3", "pay U (lost, never charged), ORDER_NOT_EXIST three times, payCancel "
                       "closes it", "CANCELLED", False),
    "cancel_after_limit": ("query limit, cancel", "pay U (charged), payQuery U until the query time limit, "
                           "payCancel refunds it", "CANCELLED", False),
    "manual_charged": ("cancel U, charged", "pay U (charged), payQuery U, payCancel U four times: MANUAL, and the "
                       "gateway has the money", "MANUAL", True),
    "manual_not_charged": ("cancel U, lost", "pay U (lost, never charged), payQuery U, payCancel U four times: "
                           "MANUAL, no money taken", "MANUAL", False),
}
_ORDER = ("none", "timeout", "none", "unknown_not_exist", "refused", "none", "lost_not_exist", "cancel_after_limit",
          "manual_charged", "none", "manual_not_charged", "none")
ORDINARY = ("none", "none")  # the payments of each later day: none of them fails
_TITLES = ("Flat white", "Dumplings", "Umbrella", "Phone charger", "Green tea", "Postcards")


@dataclass(frozen=True)
class PlannedPayment:
    merchant_trans_id: str
    amount: int  # minor units
    currency: str
    title: str
    fault: str  # a ``PLAN`` key
    at: datetime  # when the cashier scans the code (simulated)

    @property
    def expected_state(self) -> str:
        return PLAN[self.fault][2]


def plan_payments(day: date, seed: int, faults: Sequence[str] = _ORDER) -> list[PlannedPayment]:
    """The day's payments, one fault each (default ``_ORDER``: every fault of ``PLAN``), deterministic from
    ``seed`` and ``day``."""
    rng = random.Random(f"barcode-{seed}-{day}")
    start = datetime.combine(day, time(11), UTC8)
    tag = BARCODE_MERCHANT.account_id[-4:]
    return [PlannedPayment(f"BC-{tag}-{day:%m%d}-{n:03d}", rng.randint(300, 25000), BARCODE_MERCHANT.currencies[0],
                           rng.choice(_TITLES), fault, start + timedelta(minutes=37 * n + rng.randint(0, 20)))
            for n, fault in enumerate(faults, start=1)]


def _arm(fault: str) -> PayFaults:
    """The gateway's faults for one payment (``PLAN``)."""
    unending = 1000  # answered U for as long as the flow asks
    return {
        "none": PayFaults(),
        "timeout": PayFaults(latency=LATENCY, latency_calls=1),
        "unknown_not_exist": PayFaults(pay_unknown=1, order_not_exist=1),
        "refused": PayFaults(pay_fail=1),
        "lost_not_exist": PayFaults(pay_lost=1, order_not_exist=3),
        "cancel_after_limit": PayFaults(pay_unknown=1, query_unknown=unending),
        "manual_charged": PayFaults(pay_unknown=1, query_unknown=unending, cancel_unknown=unending),
        "manual_not_charged": PayFaults(pay_lost=1, query_unknown=unending, cancel_unknown=unending),
    }[fault]


def settlement_day(day: date) -> date:
    """[inferred] a business day settles itself, a weekend day on the next business day (barcode.md 2.1)."""
    return day if day.weekday() < 5 else add_business_days(day, 1)


def render_files(merchant_id: str, charged: Sequence[GatewayPayment], days: Sequence[date]
                 ) -> dict[str, tuple[bytes, datetime]]:
    """The B1 files of ``days`` from what the gateway charged: {remote path relative to the root: (bytes,
    publication time)}. Per day T and currency: the transaction detail of T's payments (published T+1); per
    settlement day S (``settlement_day``) and currency: the settlement detail and summary of the payments it
    settles (published S+1). One currency per file set (barcode.md 3: ``<currency>`` in every name)."""
    def day_of(p: GatewayPayment) -> date:
        return p.created_at.astimezone(UTC8).date()

    def put(report: str, rows: list[dict[str, Any]], day: date, currency: str, header: Sequence[str] | None = None
            ) -> None:
        name = barcode.file_name(report, merchant_id, day, currency=currency)
        data = barcode.write_report(report, rows, header=header, meta={"name_currency": currency})
        out[f"download/{merchant_id}/{day:%Y%m%d}/{name}"] = (data, datetime.combine(
            day + timedelta(days=1), PUBLISH_TIME, UTC8))

    out: dict[str, tuple[bytes, datetime]] = {}
    paid = {p.merchant_trans_id: p.created_at.astimezone(UTC8).replace(microsecond=0) for p in charged}
    for currency in sorted({p.currency for p in charged}):
        payments = [p for p in charged if p.currency == currency and day_of(p) in days]
        for day in days:
            put("transaction_detail", [
                {"merchantId": p.merchant_id, "storeId": "STORE-01", "productCode": PRODUCT_CODE,
                 "paymentTime": paid[p.merchant_trans_id], "orderTitle": p.order_title, "transType": "PAYMENT",
                 "transStatus": "Success", "merchantTransId": p.merchant_trans_id, "acquirementId": p.acquirement_id,
                 "orderAmount": p.amount, "orderCurrency": p.currency, "userSite": USER_SITE}
                for p in payments if day_of(p) == day], day, currency)
        for settled in sorted({settlement_day(day_of(p)) for p in payments}):
            batch = [p for p in payments if settlement_day(day_of(p)) == settled]
            settled_at = datetime.combine(settled, time(23, 0), UTC8)  # [inferred] the end of the settlement day
            reference = f"{settled:%Y%m%d}{merchant_id[-6:]}"
            put("settlement_detail", [
                {"merchantId": p.merchant_id, "storeId": "STORE-01", "transType": "PAYMENT",
                 "productCode": PRODUCT_CODE, "acquirementId": p.acquirement_id,
                 "paymentTime": paid[p.merchant_trans_id], "userSite": USER_SITE, "referenceId": reference,
                 "settlementTime": settled_at,
                 "merchantTransId": p.merchant_trans_id, "orderAmount": p.amount, "orderCurrency": p.currency,
                 "settlementCurrency": currency, "settlementAmount": p.amount - pct(p.amount, FEE_PCT),
                 "fee": -pct(p.amount, FEE_PCT)} for p in batch],
                settled, currency, barcode.HEADERS[("settlement_detail", "v18")])
            fees = -sum(pct(p.amount, FEE_PCT) for p in batch)
            net = sum(p.amount for p in batch) + fees
            put("settlement_summary", [
                {"type": kind, "settlementTime": settled_at, "count": len(batch), "settlementAmount": net,
                 "settlementCurrency": currency, "commission": fees, "referenceId": reference,
                 "merchantId": merchant_id} for kind in ("PAYMENT", "TOTAL")], settled, currency)
    return out


def expected_findings(outcomes: Sequence[tuple[str, State, bool]]) -> list[dict[str, Any]]:
    """Truth exceptions from (merchantTransId, journal state, charged by the gateway), by match.py rules 6-7 on
    the reconciled report (``transaction_detail``): derived from the two sides' records, not from the matcher."""
    out: list[dict[str, Any]] = []
    for trans_id, state, charged in outcomes:
        ledger_ok = LEDGER_STATUS[state] == "SUCCESS"
        found: tuple[str, str] | None = None
        if charged and not ledger_ok:
            found = ("status_mismatch", "LEDGER_NOT_SUCCESS")
        elif ledger_ok and not charged:
            found = ("missing_in_report", "NOT_IN_REPORT")
        if found is not None:
            out.append({"family": "barcode", "report": "transaction_detail", "exception_class": found[0],
                        "reason_code": found[1], "match_key": trans_id, "record_type": "PAYMENT"})
    return out


@dataclass
class BarcodeDay:
    """What the merchant's days left: the journal's final records, the gateway's view, the files published.
    ``day``: the day with the faults; ``planned``: its payments, then the ordinary days' (fault ``none``)."""

    day: date
    planned: list[PlannedPayment]
    records: dict[str, PaymentRecord]  # by merchantTransId
    charged: set[str]  # merchantTransIds the gateway kept the money of
    files: dict[str, datetime] = field(default_factory=dict)  # world-relative path -> publication time
    exceptions: list[dict[str, Any]] = field(default_factory=list)

    def by_state(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s: [] for s in ("SUCCESS", "CANCELLED", "FAILED", "MANUAL")}
        for trans_id, record in self.records.items():
            out.setdefault(record.state, []).append(trans_id)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "payments": len(self.records), "by_state": self.by_state(),
                "charged": sorted(self.charged), "files": sorted(self.files),
                "payments_detail": [{"merchant_trans_id": p.merchant_trans_id, "fault": p.fault,
                                     "state": self.records[p.merchant_trans_id].state,
                                     "charged": p.merchant_trans_id in self.charged,
                                     "reason": self.records[p.merchant_trans_id].reason} for p in self.planned]}


class _SimSleep:
    """The flow's waits on the simulated clock: the seconds pass at once, and by their end every pay already
    sent has reached the gateway (a delayed pay is what a 5-7 s wait lets arrive, barcode.md 10.5 step 2)."""

    def __init__(self, clock: SimClock, gateway: PayGateway) -> None:
        self.clock, self.gateway = clock, gateway
        self.sent = gateway.stats.calls["pay"]

    def observe(self, event: str, function: str, record: PaymentRecord) -> None:
        if event == "before" and function == "pay":
            self.sent += 1

    def __call__(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))
        deadline = time_mod.monotonic() + 10 * LATENCY
        while self.gateway.stats.calls["pay"] < self.sent and time_mod.monotonic() < deadline:
            time_mod.sleep(0.01)


@dataclass
class BarcodeMerchant:
    """The merchant as the demo's workspace configures it: a pay profile for the sandbox gateway, the journal
    in the workspace, the journal ledger, an SFTP account for the B1 files."""

    gateway: PayGateway
    workspace: Path
    account: Account = BARCODE_MERCHANT
    client_id: str = CLIENT_ID
    _key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537,
                                                                                    key_size=2048), repr=False)

    def __post_init__(self) -> None:
        self.gateway.register_client(self.client_id, self._key.public_key(), [self.account.account_id])

    @property
    def ledger_path(self) -> Path:
        return self.workspace / LEDGER_NAME

    def pay_config(self, key_file: Path = Path(KEY_FILE), *, timeout: float | None = CLIENT_TIMEOUT,
                   flow: PayFlowConfig | None = FLOW) -> PayConfig:
        """The sandbox profile of this client. The demo's defaults (a short timeout, simulated intervals) suit
        its own run; ``timeout=None`` / ``flow=None`` keep the profile's and the flow's defaults (a person's
        ``alirecon pay`` waits real seconds)."""
        timing = {} if timeout is None else {"timeout": timeout}
        profile = PayProfile(environment="sandbox", endpoint=self.gateway.endpoint, client_id=self.client_id,
                             merchant_id=self.account.account_id, private_key_file=key_file,
                             alipay_public_key=self.gateway.alipay_public_key_pem, **timing)
        return PayConfig(active="sandbox", sandbox=profile, flow=flow or PayFlowConfig())

    def write_key(self, path: Path) -> Path:
        """The client's private key into ``path`` (replaced), created with mode 0600 so no other user ever reads
        it: the key leaves the process only through this file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
        return path

    def ledger_config(self) -> LedgerConfig:
        return journal_ledger_config(self.ledger_path, name="barcode-pay-journal")

    def account_config(self, sftp: dict[str, Any] | None) -> AccountConfig:
        data: dict[str, Any] = {"name": f"barcode-merchant-{self.account.account_id}", "family": "barcode",
                                "account_id": self.account.account_id, "role": "MERCHANT",
                                "settlement_currencies": [self.account.settlement_currency]}
        if sftp is not None:
            data["sftp"] = {**sftp, "directories": list(DEFAULT_DIRECTORIES[("barcode", "production")])}
        # this merchant receives B1 files: ``alirecon status`` expects its daily transaction detail (schedule.py)
        data["schedule"] = {"reports": ["transaction_detail"]}
        return AccountConfig.model_validate(data)

    def run_day(self, day: date, *, seed: int, clock: SimClock, world_root: Path, tree: ProviderTree | None = None,
                until: date | None = None, progress: Callable[[str], None] | None = None) -> BarcodeDay:
        """Pay ``plan_payments(day, seed)`` through the flow, each with its faults, then ``ORDINARY`` payments
        without faults on each later day through ``until``; write the journal ledger; publish each day's files
        (world folder + ``publish.json`` + ``tree``, the morning after); add the truth to truth.json."""
        self.write_key(self.workspace / KEY_FILE)
        config = self.pay_config()
        days = [day + timedelta(days=n) for n in range(((until or day) - day).days + 1)]
        planned = [*plan_payments(day, seed), *(p for d in days[1:] for p in plan_payments(d, seed, ORDINARY))]
        sleep = _SimSleep(clock, self.gateway)
        records: dict[str, PaymentRecord] = {}
        with PayClient.from_config(config, key_root=self.workspace, now=clock.now) as client, \
                PayJournal(self.workspace / JOURNAL_NAME) as journal:
            flow = PayFlow(client, journal, FlowSettings(**config.flow.overrides()), sleep=sleep, now=clock.now,
                           rng=random.Random(seed), observer=sleep.observe)
            for p in planned:
                if progress:
                    progress(p.merchant_trans_id)
                clock.set(p.at)
                self.gateway.faults = _arm(p.fault)
                records[p.merchant_trans_id] = flow.pay(PaymentRequest(p.merchant_trans_id, p.amount, p.currency,
                                                                       f"28{p.at:%H%M%S}{len(records):010d}",
                                                                       p.title))
                sleep(0)  # a delayed pay arrives before the next payment's faults are set
            self.gateway.faults = PayFaults()
            write_journal_ledger(journal_rows(journal, self.account.account_id), self.ledger_path)
        charged = [g for g in self.gateway.accepted_payments() if g.merchant_id == self.account.account_id]
        result = BarcodeDay(day, planned, records, {g.merchant_trans_id for g in charged})
        for rel, (data, publish_at) in render_files(self.account.account_id, charged, days).items():
            written = _write_provider_file(world_root, rel, data, publish_at)
            result.files[rel] = publish_at
            if tree is not None:
                tree.add(written)
        result.exceptions = expected_findings([(t, r.state, t in result.charged) for t, r in records.items()])
        _record(world_root, result)
        return result


def _write_provider_file(world_root: Path, rel: str, data: bytes, publish_at: datetime) -> RemoteFile:
    """``data`` as the world's ``provider/<rel>``, and the server's entry for it."""
    local = world_root / "provider" / rel
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return RemoteFile("/" + rel, local, publish_at, len(data))


def _add_to_publish(world_root: Path, files: dict[str, datetime]) -> None:
    """Files into the world's ``publish.json`` (replaced atomically), so a later ``sandbox serve`` of the same
    folder serves them again."""
    publish_file = world_root / "publish.json"
    publish = json.loads(publish_file.read_text(encoding="utf-8"))
    publish.update({rel: at.isoformat() for rel, at in files.items()})
    scratch = publish_file.with_name(publish_file.name + ".tmp")
    scratch.write_text(json.dumps(dict(sorted(publish.items())), indent=1) + "\n", encoding="utf-8")
    scratch.replace(publish_file)


def _record(world_root: Path, day: BarcodeDay) -> None:
    """The day into the world's files: its B1 files in ``publish.json``, its findings and faults in ``truth.json``
    (sorted as ``world.build_world`` sorts them)."""
    _add_to_publish(world_root, day.files)
    truth_file = world_root / "truth.json"
    truth = json.loads(truth_file.read_text(encoding="utf-8"))
    truth["exceptions"] = sorted([*truth["exceptions"], *day.exceptions], key=lambda e: (
        e["family"], e["report"], e["exception_class"], e["match_key"]))
    truth["accounts"].append({"family": "barcode", "account_id": BARCODE_MERCHANT.account_id, "role": "MERCHANT",
                              "settlement_currency": BARCODE_MERCHANT.settlement_currency, "agreement_id": ""})
    truth["injections"].extend(f"barcode: {p.merchant_trans_id} {PLAN[p.fault][1]} -> "
                               f"{day.records[p.merchant_trans_id].state}" for p in day.planned if p.fault != "none")
    truth_file.write_text(json.dumps(truth, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def pay_toml(config: PayConfig) -> str:
    """``config`` as the ``[pay]`` section of an ``alirecon.toml``, ready to paste: only what differs from the
    defaults, plus ``active`` (the one switch, barcode.md 10.7), so the reader sees which profile is in use."""
    data = {"active": config.active, **config.model_dump(mode="json", exclude_none=True, exclude_defaults=True)}
    return tomli_w.dumps({"pay": data}, multiline_strings=True)


def _file_day(rel: str) -> date:
    """The date folder of a B1 path ``download/<merchantId>/<yyyyMMdd>/<name>`` (``render_files``)."""
    return datetime.strptime(rel.split("/")[2], "%Y%m%d").date()


class NextDayPublisher:
    """What a running gateway keeps becomes the next day's B1 files on the running SFTP server.

    Why: issue 5 item 5, "payments it accepts flow into the synthetic world's settlement and transaction files
    of the following day". Each ``publish_due`` (a background thread calls it every ``poll`` real seconds while
    entered) looks at the UTC+8 days that have ended on the simulated clock: for each such day with payments the
    gateway kept for ``merchant_id``, ``render_files`` makes the transaction detail of that day and the
    settlement files of its settlement day (``settlement_day``: a weekend's payments settle together, so those
    are made once the settlement day itself has ended), published at their scheduled time (09:00 UTC+8 the
    next morning, ``PUBLISH_TIME``) with ``ProviderTree.add``, written under ``<world>/provider`` and recorded in
    ``<world>/publish.json`` (so the next ``sandbox serve`` of the folder serves them again).

    What the world already has stays as it is: payments are rendered only for days after the last day of B1
    files the tree already holds for this merchant (a demo world's files) and from the day the publisher
    starts, and no path already in the tree is added again. So a payment of a day the world already has files
    for is in no file, and a weekend payment whose settlement files the world already published is in no
    settlement file (the transaction detail of its day still lists it when that day is new).
    """

    def __init__(self, gateway: PayGateway, merchant_id: str, tree: ProviderTree, world_root: Path,
                 clock: SimClock, *, poll: float = 0.1) -> None:
        self.gateway, self.merchant_id, self.tree, self.world_root = gateway, merchant_id, tree, world_root
        self.clock, self.poll = clock, poll
        prefix = f"/download/{merchant_id}/"
        world_days = [_file_day(p[1:]) for p in tree.files if p.startswith(prefix)]
        self.first_day = self._today()
        if world_days:
            self.first_day = max(self.first_day, max(world_days) + timedelta(days=1))
        self.published: dict[str, datetime] = {}  # world-relative path -> publication time
        self._lock = threading.Lock()
        self._seen: tuple[date, tuple[str, ...]] | None = None  # the last (ended day, kept payments) looked at
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _today(self) -> date:
        return self.clock.now().astimezone(UTC8).date()

    def publish_due(self) -> list[str]:
        """Publish the files of every ended day not yet published; return their world-relative paths."""
        with self._lock:
            ended = self._today() - timedelta(days=1)
            kept = [p for p in self.gateway.accepted_payments() if p.merchant_id == self.merchant_id]
            seen = (ended, tuple(p.merchant_trans_id for p in kept))
            days = sorted({d for p in kept if self.first_day <= (d := p.created_at.astimezone(UTC8).date()) <= ended})
            if not days or seen == self._seen:
                return []
            added: dict[str, RemoteFile] = {}
            for rel, (data, publish_at) in render_files(self.merchant_id, kept, days).items():
                if _file_day(rel) > ended or "/" + rel in self.tree.files:
                    continue  # a settlement day not over yet (its batch may grow), or a file the tree has
                added[rel] = _write_provider_file(self.world_root, rel, data, publish_at)
            # the world's record first, then the server: a failure before the end is simply tried again
            if added:
                _add_to_publish(self.world_root, {rel: f.publish_at for rel, f in added.items()})
            for rel, remote in added.items():
                self.tree.add(remote)
                self.published[rel] = remote.publish_at
            self._seen = seen
            if added:
                log.info("barcode: %d B1 file(s) of %s published for %s", len(added), self.merchant_id,
                         ", ".join(sorted({f"{_file_day(r):%Y-%m-%d}" for r in added})))
            return sorted(added)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.publish_due()
            except Exception:  # a bad day must not stop the servers or the later days
                log.exception("barcode: publishing the next day's files failed")

    def __enter__(self) -> NextDayPublisher:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="alirecon-sandbox-barcode-publisher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
