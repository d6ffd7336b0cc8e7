"""Alipay China monthly bills restate the daily ones: which periods are matched is a setting
(``reconcile.match_periods``), and either choice finds exactly the world's injected discrepancies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alirecon import pipeline
from alirecon.config import AccountConfig
from alirecon.demo import world_config
from alirecon.sandbox.world import World, build_world
from alirecon.sandbox.world_cn import CN_MERCHANT
from alirecon.sources.billzip import extract_bill_zip
from alirecon.warehouse import Workspace


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


def reconcile_cn(world: World, root: Path, periods: list[Any] | None) -> list[tuple[str, str]]:
    """(class, key) of every exception, daily and monthly bills all ingested, ``periods`` matched."""
    bills = root / "bills"
    bills.mkdir(parents=True)
    for zipped in sorted((world.root / "alipay_cn").rglob("*.zip")):
        for entry in extract_bill_zip(zipped.read_bytes(), zipped.name):
            (bills / entry.basename).write_bytes(entry.data)
    config = world_config(world)
    config.ledgers = [ledger for ledger in config.ledgers if ledger.family == "alipay_cn"]
    config.accounts = [AccountConfig(name="cn", family="alipay_cn", account_id=CN_MERCHANT.account_id)]
    config.reconcile.match_reports = {"alipay_cn": ["trade_detail"]}
    if periods is not None:
        config.reconcile.match_periods = {"alipay_cn": periods}
    with Workspace.init(root / "ws", config) as ws:
        ingest = ws.ingest(sorted(bills.iterdir()))
        assert ingest.ok and ingest.count("new") == 4 * 8  # 4 files a day for 7 days, and the month's
        pipeline.ingest_ledgers(ws)
        rows = pipeline.reconcile(ws).exceptions.to_pylist()
    return sorted((r["exception_class"], r["match_key"]) for r in rows)


def test_daily_by_default_and_monthly_on_request_find_the_same(world: World, tmp_path: Path) -> None:
    truth = sorted((e["exception_class"], e["match_key"]) for e in world.truth.exceptions
                   if e["family"] == "alipay_cn")
    assert len(truth) == 9
    assert reconcile_cn(world, tmp_path / "daily", None) == truth
    assert reconcile_cn(world, tmp_path / "monthly", ["monthly"]) == truth


def test_matching_both_periods_pairs_every_trade_twice(world: World, tmp_path: Path) -> None:
    found = reconcile_cn(world, tmp_path / "both", ["daily", "monthly"])
    duplicates = [key for cls, key in found if cls == "duplicate_in_report"]
    assert len(duplicates) > 50  # every trade listed in a day's bill and again in the month's
