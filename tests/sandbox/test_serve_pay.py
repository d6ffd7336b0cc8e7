"""``alirecon sandbox serve`` also serves the barcode payment gateway: one client whose key is in a 0600 file and
never printed, a ``[pay]`` section ready to paste, and the payments it keeps published as the next day's B1 files
on the running SFTP server (``world_barcode.NextDayPublisher``)."""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import asyncssh
import duckdb
import pytest

from alirecon.clock import UTC8
from alirecon.config import WorkspaceConfig
from alirecon.formats.registry import parse_file
from alirecon.pay.client import PayClient
from alirecon.pay.flow import FlowSettings, PayFlow, PayJournal, PaymentRequest
from alirecon.sandbox.clock import SimClock
from alirecon.sandbox.model import WorldSpec
from alirecon.sandbox.pay_gateway import PayGateway
from alirecon.sandbox.sftp_server import ProviderTree, SandboxServer
from alirecon.sandbox.world import World, build_world
from alirecon.sandbox.world_barcode import BARCODE_MERCHANT, PUBLISH_TIME, BarcodeMerchant, NextDayPublisher

from .serve_cli import serving, serving_text

MID = BARCODE_MERCHANT.account_id
FRI, SAT, SUN, MON, TUE = (date(2026, 11, 6) + timedelta(days=n) for n in range(5))


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, datetime.min.time(), UTC8).replace(hour=hour, minute=minute)


def _b1(kind: str, day: date) -> str:
    return f"download/{MID}/{day:%Y%m%d}/ALIPAY_{kind}_USD_{day:%Y%m%d}.csv"


def _refs(path: Path, con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """merchantTransId -> amount (minor units) of a B1 file, read by the same parser a user's ingest uses."""
    parsed = parse_file(path, con)
    assert parsed.ok and not parsed.problems, parsed.problems
    rows = con.execute(f"SELECT merchant_ref_id, amount_minor FROM ({parsed.lines_sql()})").fetchall()
    return {str(ref): int(amount) for ref, amount in rows}


# --- the publisher, in-process on a frozen clock ------------------------------------------------


@dataclass
class Shop:
    clock: SimClock
    gateway: PayGateway
    flow: PayFlow
    world: Path

    def pay(self, trans_id: str, at: datetime, amount: int = 1234) -> None:
        self.clock.set(at)
        record = self.flow.pay(PaymentRequest(trans_id, amount, "USD", "281234567890123456", "Tea"))
        assert record.state == "SUCCESS"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    clock = SimClock(_at(FRI, 9))
    world = tmp_path / "world"
    world.mkdir()
    (world / "publish.json").write_text("{}", encoding="utf-8")
    with PayGateway(clock) as gateway:
        merchant = BarcodeMerchant(gateway, tmp_path / "ws")
        config = merchant.pay_config(merchant.write_key(tmp_path / "key.pem"), timeout=5.0, flow=None)
        with PayClient.from_config(config, key_root=tmp_path, now=clock.now) as client, \
                PayJournal(tmp_path / "journal.sqlite") as journal:
            yield Shop(clock, gateway, PayFlow(client, journal, FlowSettings()), world)


def test_each_ended_day_is_published_the_next_morning_and_a_weekend_settles_on_monday(
        shop: Shop, con: duckdb.DuckDBPyConnection) -> None:
    tree = ProviderTree([])
    publisher = NextDayPublisher(shop.gateway, MID, tree, shop.world, shop.clock)
    shop.pay("T-FRI", _at(FRI, 10))
    shop.clock.set(_at(FRI, 23, 59))
    assert publisher.publish_due() == []  # Friday has not ended
    shop.clock.set(_at(SAT, 0))
    friday = [_b1("SETTLEMENT_DETAIL", FRI), _b1("SETTLEMENT_SUMMARY", FRI), _b1("TRANSACTION_DETAIL", FRI)]
    assert publisher.publish_due() == friday  # a business day settles itself
    server = SandboxServer(tree, shop.clock, users={"u": "p"})
    assert server.visible_files(_at(SAT, 8, 59)) == {}
    assert sorted(p[1:] for p in server.visible_files(datetime.combine(SAT, PUBLISH_TIME, UTC8))) == friday
    assert _refs(shop.world / "provider" / _b1("TRANSACTION_DETAIL", FRI), con) == {"T-FRI": 1234}

    for n, day in enumerate((SAT, SUN, MON), start=1):
        shop.pay(f"T-{day:%a}", _at(day, 11), amount=1000 * n)
    shop.clock.set(_at(SUN, 0))
    assert publisher.publish_due() == [_b1("TRANSACTION_DETAIL", SAT)]  # Saturday settles on Monday: not yet
    shop.clock.set(_at(TUE, 0))  # Sunday and Monday end together: Monday's settlement holds the whole weekend
    assert publisher.publish_due() == [_b1("TRANSACTION_DETAIL", SUN), _b1("SETTLEMENT_DETAIL", MON),
                                       _b1("SETTLEMENT_SUMMARY", MON), _b1("TRANSACTION_DETAIL", MON)]
    assert publisher.publish_due() == []  # nothing new: nothing added twice
    assert _refs(shop.world / "provider" / _b1("SETTLEMENT_DETAIL", MON), con) == {
        "T-Sat": 1000, "T-Sun": 2000, "T-Mon": 3000}
    assert _refs(shop.world / "provider" / _b1("TRANSACTION_DETAIL", SUN), con) == {"T-Sun": 2000}
    # the world's record: a later `sandbox serve` of the folder serves the same files
    publish = json.loads((shop.world / "publish.json").read_text(encoding="utf-8"))
    assert publish == {rel: datetime.combine(_file_date(rel) + timedelta(days=1), PUBLISH_TIME, UTC8).isoformat()
                       for rel in publisher.published}
    assert sorted(ProviderTree.from_world_dir(shop.world).files) == sorted(tree.files)


def _file_date(rel: str) -> date:
    return datetime.strptime(rel.split("/")[2], "%Y%m%d").date()


def test_days_the_world_already_has_files_for_are_left_as_they_are(shop: Shop) -> None:
    existing = _b1("TRANSACTION_DETAIL", FRI)
    (shop.world / "provider" / existing).parent.mkdir(parents=True)
    (shop.world / "provider" / existing).write_bytes(b"the world's own file")
    (shop.world / "publish.json").write_text(json.dumps({existing: _at(SAT, 9).isoformat()}), encoding="utf-8")
    tree = ProviderTree.from_world_dir(shop.world)
    publisher = NextDayPublisher(shop.gateway, MID, tree, shop.world, shop.clock)
    assert publisher.first_day == SAT
    shop.pay("T-FRI", _at(FRI, 10))  # a day the world already published: in no new file
    shop.pay("T-SAT", _at(SAT, 10))
    shop.clock.set(_at(SUN, 0))
    assert publisher.publish_due() == [_b1("TRANSACTION_DETAIL", SAT)]
    assert (shop.world / "provider" / existing).read_bytes() == b"the world's own file"
    assert b"T-FRI" not in (shop.world / "provider" / _b1("TRANSACTION_DETAIL", SAT)).read_bytes()


# --- the real command ---------------------------------------------------------------------------

# 16,000 simulated seconds per real second from the start of a UTC+8 day: about 5.4 real seconds to start and pay
# before the day ends, then 2 until the next morning's 09:00, when its B1 files appear
SPEED = 16000
DAY = date(2026, 11, 5)
START = _at(DAY, 0, 1).isoformat()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), WorldSpec(days=3, payments_per_day=3, inject=False))


def _key_body(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="ascii").splitlines() if ln and not ln.startswith("-----")]


def test_serve_prints_the_pay_client_without_its_key(world: World) -> None:
    with serving_text(world.root, START) as text:
        key_file = world.root / "pay-client-key.pem"
        assert f"pay private_key_file: {key_file.resolve()}" in text
        assert f"pay merchant_id: {MID}" in text and "pay client_id: " in text
        assert "pay endpoint: http://127.0.0.1:" in text
        assert f"pay config: {(world.root / 'pay.toml').resolve()}" in text
        assert "PRIVATE KEY" not in text and not any(line in text for line in _key_body(key_file))


async def _fetch_when_listed(details: dict[str, object], days: list[date], needle: bytes,
                             deadline: float) -> tuple[date, bytes]:
    """The first of ``days``' transaction details that holds ``needle``, once the server lists it. The payment's
    day is the gateway's simulated day when the pay arrived: on a slow machine that may be a later day than the
    one the server started on, so each candidate day is looked at (the simulated morning comes within seconds)."""
    password = Path(str(details["password_from"])).read_text(encoding="utf-8").strip()
    known = asyncssh.import_known_hosts(str(details["known_hosts"]) + "\n")
    async with asyncssh.connect(str(details["host"]), int(str(details["port"])), username=str(details["user"]),
                                password=password, known_hosts=known) as conn, conn.start_sftp_client() as sftp:
        while True:
            for day in days:
                folder, name = f"/download/{MID}/{day:%Y%m%d}", f"ALIPAY_TRANSACTION_DETAIL_USD_{day:%Y%m%d}.csv"
                try:
                    if name in await sftp.listdir(folder):
                        async with sftp.open(f"{folder}/{name}", "rb") as remote:
                            data = bytes(await remote.read())
                        if needle in data:
                            return day, data
                except asyncssh.SFTPNoSuchFile:
                    pass
            assert time.monotonic() < deadline, f"no transaction detail of {days} holds {needle!r}"
            await asyncio.sleep(0.2)


def test_a_payment_to_the_served_gateway_is_in_the_next_days_transaction_detail(
        world: World, tmp_path: Path, con: duckdb.DuckDBPyConnection) -> None:
    with serving(world.root, START, speed=SPEED) as details:
        pay = details["pay"]
        key_file = Path(pay["private_key_file"])
        assert key_file == (world.root / "pay-client-key.pem").resolve()
        assert key_file.stat().st_mode & 0o777 == 0o600
        printed = json.dumps(details)
        assert "PRIVATE KEY" not in printed and not any(line in printed for line in _key_body(key_file))
        assert pay["merchant_id"] == MID and pay["endpoint"].startswith("http://127.0.0.1:")

        # world/pay.toml is a [pay] section a workspace takes as it is, naming what was printed
        config = WorkspaceConfig.model_validate(tomllib.loads(Path(pay["config"]).read_text(encoding="utf-8"))).pay
        assert config is not None and config.active == "sandbox"
        profile = config.profile()
        assert (str(profile.endpoint), profile.client_id, profile.merchant_id, profile.private_key_file,
                profile.alipay_public_key) == (pay["endpoint"], pay["client_id"], pay["merchant_id"], key_file,
                                               pay["alipay_public_key"])

        with PayClient.from_config(config, key_root=tmp_path) as client, \
                PayJournal(tmp_path / "journal.sqlite") as journal:
            record = PayFlow(client, journal, FlowSettings(**config.flow.overrides())).pay(
                PaymentRequest("SHOP-0001", 4321, "USD", "281234567890123456", "Umbrella"))
        assert record.state == "SUCCESS" and record.acquirement_id

        day, data = asyncio.run(_fetch_when_listed(details, [DAY + timedelta(days=n) for n in range(3)],
                                                   b"SHOP-0001", time.monotonic() + 90))
        name = f"ALIPAY_TRANSACTION_DETAIL_USD_{day:%Y%m%d}.csv"
    local = tmp_path / name
    local.write_bytes(data)
    assert _refs(local, con) == {"SHOP-0001": 4321}
    assert record.acquirement_id in data.decode("utf-8")
    publish = json.loads((world.root / "publish.json").read_text(encoding="utf-8"))
    assert publish[f"download/{MID}/{day:%Y%m%d}/{name}"] == datetime.combine(
        day + timedelta(days=1), PUBLISH_TIME, UTC8).isoformat()
