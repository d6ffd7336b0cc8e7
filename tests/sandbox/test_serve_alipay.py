"""``alirecon sandbox serve`` also serves the Alipay China gateway: on the same simulated clock, from the bill zips
under ``<world>/alipay_cn``, with an app whose private key is in a 0600 file and never printed."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest

from alirecon.config import OpenApiConfig
from alirecon.sandbox.alipay_gateway import account20
from alirecon.sandbox.model import WorldSpec
from alirecon.sandbox.world import World, build_world
from alirecon.sources.billzip import write_bill_zip
from alirecon.sources.openapi import BillNotClosed, BillNotReady, OpenApiClient

from .serve_cli import serving

PID = "2088123412341234"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"), WorldSpec(days=3, payments_per_day=3, inject=False))


def test_serve_starts_the_gateway_beside_sftp(world: World) -> None:
    bill = write_bill_zip([(f"{account20(PID)}_20261104_业务明细.csv", "#支付宝业务明细查询\r\n".encode("gbk"))])
    folder = world.root / "alipay_cn" / PID / "trade"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "20261104.csv.zip").write_bytes(bill)
    with serving(world.root, "2026-11-05T10:00:00+08:00") as details:
        alipay = details["alipay"]
        assert alipay["pid"] == PID and alipay["app_id"] == "2021000000000001"
        assert alipay["gateway"].startswith("http://127.0.0.1:") and alipay["gateway"].endswith("/gateway.do")
        key_file = Path(alipay["private_key_file"])
        assert key_file == (world.root / "alipay-app-key.pem").resolve()
        assert key_file.stat().st_mode & 0o777 == 0o600
        key_lines = [ln for ln in key_file.read_text().splitlines() if ln and not ln.startswith("-----")]
        assert "PRIVATE KEY" not in json.dumps(details)
        assert not any(ln in json.dumps(details) for ln in key_lines)

        cfg = OpenApiConfig(gateway=alipay["gateway"], app_id=alipay["app_id"], private_key_file=key_file,
                            alipay_public_key=alipay["alipay_public_key"], timeout=5.0, retries=0)
        now = datetime.fromisoformat(details["simulated_now"])  # the clock the gateway shares with SFTP
        with OpenApiClient(cfg, account="sandbox", now=lambda: now) as api:
            assert api.fetch_bill("trade", "2026-11-04").data == bill
            with pytest.raises(BillNotReady):  # a closed day without a bill in the world
                api.fetch_bill("trade", "2026-11-03")
            with pytest.raises((BillNotClosed, BillNotReady)):  # the simulated today is not closed
                api.fetch_bill("trade", date(2026, 11, 5))
