"""The workspace: ingest is idempotent, bad files are quarantined, nothing is ever half-loaded."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alirecon import errors, warehouse
from alirecon.config import CONFIG_NAME, LedgerConfig, WorkspaceConfig
from alirecon.formats import antom, registry
from alirecon.formats.engine import ParsedFile, extra_sql, extras_dict
from alirecon.schema import CHECK_RESULT, EXCEPTION, LEDGER_LINE, REPORT_LINE
from alirecon.warehouse import LoadError, Workspace

CUSTOMER = "1022188000000000001"
UTC8_30 = timezone(timedelta(hours=8, minutes=30))
PAID = datetime(2018, 12, 25, 10, 0, tzinfo=UTC8_30)
SETTLED = datetime(2018, 12, 26, 10, 0, tzinfo=UTC8_30)


def detail_rows(batch: str, n: int, *, first: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "settlementBatchId": batch, "customerId": CUSTOMER, "transactionId": f"T{batch[-4:]}{i:04d}",
            "transactionRequestId": f"R{batch[-4:]}{i:04d}", "transactionType": "PAYMENT",
            "paymentMethodType": "KAKAOPAY", "pspName": "KaKaoPay", "paymentTime": PAID, "settlementTime": SETTLED,
            "productCode": "AGREEMENT_PAYMENT", "transactionAmountValue": 18000 + i, "transactionCurrency": "KRW",
            "settlementAmountValue": 1450 + i, "settlementCurrency": "USD", "feeAmountValue": -50,
            "feeCurrency": "USD",
        }
        for i in range(first, first + n)
    ]


def settlement_detail(folder: Path, batch: str, n: int = 3, **overrides: Any) -> Path:
    rows = detail_rows(batch, n)
    for r in rows:
        r.update(overrides)
    path = folder / antom.file_name("settlement_detail", currency="USD", batch_id=batch)
    path.write_bytes(antom.write_report("settlement_detail", rows))
    return path


def settlement_summary(folder: Path, batch: str) -> Path:
    rows = [
        {"settlementBatchId": batch, "customerId": CUSTOMER, "acquirer": "Alipay_SG", "summaryType": "TOTAL",
         "settlementTime": SETTLED, "count": 2, "settlementAmountValue": 2900, "settlementCurrency": "USD",
         "feeAmountValue": -100, "feeCurrency": "USD"},
    ]
    path = folder / antom.file_name("settlement_summary", currency="USD", batch_id=batch)
    path.write_bytes(antom.write_report("settlement_summary", rows))
    return path


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows_of(ws: Workspace, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    return ws.con.execute(sql, params or []).fetchall()


def count(ws: Workspace, table: str) -> int:
    return int(rows_of(ws, f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    d = tmp_path / "inbox"
    d.mkdir()
    return d


@pytest.fixture
def ws(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = Workspace.init(tmp_path / "ws")
    yield w
    w.close()


# ---------------------------------------------------------------------------------------------
# init / open


def test_init_creates_the_layout_and_is_idempotent(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    config = WorkspaceConfig.model_validate({"parse": {"amount_units": {"antom.settlement_detail": "minor"}}})
    with Workspace.init(root, config) as w:
        assert w.config == config
        w.new_run("check")
    assert (root / CONFIG_NAME).is_file() and (root / "archive").is_dir() and (root / warehouse.DB_NAME).is_file()
    toml_before = (root / CONFIG_NAME).read_bytes()

    with Workspace.init(root) as w:  # again, without a config: opens what is there
        assert w.config == config
        assert count(w, "runs") == 1
    with Workspace.init(root, config) as w:  # again with the same config
        assert count(w, "runs") == 1
    assert (root / CONFIG_NAME).read_bytes() == toml_before

    with pytest.raises(errors.ConfigError, match="different configuration"):
        Workspace.init(root, WorkspaceConfig())
    assert (root / CONFIG_NAME).read_bytes() == toml_before


def test_open_refuses_what_is_not_a_workspace(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="not an alirecon workspace"):
        Workspace.open(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("version = [unclosed\n")
    with pytest.raises(errors.ConfigError, match=CONFIG_NAME):
        Workspace.open(tmp_path)
    (tmp_path / CONFIG_NAME).write_text("no_such_setting = 1\n")
    with pytest.raises(errors.ConfigError, match="no_such_setting"):
        Workspace.open(tmp_path)


def test_tables_follow_the_canonical_schemas(ws: Workspace) -> None:
    for table, schema in (("report_lines", REPORT_LINE), ("ledger_lines", LEDGER_LINE)):
        described = rows_of(ws, f"DESCRIBE {table}")
        names = [r[0] for r in described]
        assert names[: len(schema)] == schema.names
        not_null = {r[0] for r in described if r[2] == "NO"}
        assert {f.name for f in schema if not f.nullable} <= not_null
    got = ws.con.sql(ws.report_lines_sql()).to_arrow_table()
    assert got.schema.names == REPORT_LINE.names
    assert got.cast(REPORT_LINE).schema.equals(REPORT_LINE)


def test_a_workspace_created_before_a_schema_change_gains_the_new_columns(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    dropped = {"report_lines": ("fx_pair", "occurred_at", "extras"), "exceptions": ("report_lines",),
               "files": ("meta",)}
    with Workspace.init(root) as w:
        types = {t: dict(rows_of(w, f"SELECT column_name, column_type FROM (DESCRIBE {t})")) for t in dropped}
        for table, columns in dropped.items():  # as if these columns were added to the schema later
            for column in columns:
                w.con.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    with Workspace.open(root) as w:
        for table, columns in dropped.items():
            now = dict(rows_of(w, f"SELECT column_name, column_type FROM (DESCRIBE {table})"))
            assert {c: now.get(c) for c in columns} == {c: types[table][c] for c in columns}



def test_a_workspace_with_map_extras_keeps_its_texts_as_json(tmp_path: Path) -> None:
    """Workspaces created while ``extras`` was a MAP: opened now, the same header -> text pairs as JSON."""
    root = tmp_path / "ws"
    with Workspace.init(root) as w:
        w.con.execute("ALTER TABLE report_lines DROP COLUMN extras")
        w.con.execute("ALTER TABLE report_lines ADD COLUMN extras MAP(VARCHAR, VARCHAR)")
        w.con.execute("INSERT INTO report_lines (family, report, source_sha256, source_name, line_no, extras) "
                      "VALUES ('antom', 'x', 'ab', 'f.csv', 2, MAP {'商户': 'a\"b', 'memo': 'x'}), "
                      "('antom', 'x', 'ab', 'f.csv', 3, NULL)")
    with Workspace.open(root) as w:
        assert dict(rows_of(w, "SELECT column_name, column_type FROM (DESCRIBE report_lines)"))["extras"] == "VARCHAR"
        got = [extras_dict(e, None) for (e,) in rows_of(w, "SELECT extras FROM report_lines ORDER BY line_no")]
        assert got == [{"商户": 'a"b', "memo": "x"}, {}]
        assert rows_of(w, f"SELECT {extra_sql('商户', None)} FROM report_lines ORDER BY line_no") == [('a"b',), (None,)]

# ---------------------------------------------------------------------------------------------
# ingest


def test_ingest_a_good_file(ws: Workspace, inbox: Path) -> None:
    path = settlement_detail(inbox, "2018122611021040123", n=3)
    seen: list[tuple[str, int]] = []

    report = ws.ingest([path], progress=lambda name, done: seen.append((name, done)))

    [out] = report.files
    assert (out.status, out.family, out.report, out.variant, out.rows) == (
        "new", "antom", "settlement_detail", "v1", 3)
    assert out.sha256 == sha_of(path) and out.problems == ()
    assert report.ok and seen == [(path.name, 1)]
    # the raw bytes are archived, byte for byte
    assert ws.archive.path_of(out.sha256).read_bytes() == path.read_bytes()
    lines = ws.con.sql(ws.report_lines_sql()).to_arrow_table().to_pylist()
    assert [(r["source_sha256"], r["source_name"], r["line_no"]) for r in lines] == [
        (out.sha256, path.name, 2), (out.sha256, path.name, 3), (out.sha256, path.name, 4)]
    assert [(r["merchant_ref_id"], r["settlement_minor"], r["settlement_currency"]) for r in lines] == [
        ("R0123" + f"{i:04d}", 1450 + i, "USD") for i in range(3)]
    [file_row] = rows_of(ws, "SELECT first_name, size, status, reason, error_count, row_count, meta FROM files")
    assert file_row[:6] == (path.name, path.stat().st_size, "parsed", None, 0, 3)
    assert json.loads(file_row[6])["batch_id"] == "2018122611021040123"
    # the texts without a canonical field: an array per line, their header names once on the file
    [(names,)] = rows_of(ws, "SELECT extras_names FROM files")
    assert [extras_dict(r["extras"], json.loads(names)) for r in lines] == [
        {"paymentMethodType": "KAKAOPAY", "pspName": "KaKaoPay", "productCode": "AGREEMENT_PAYMENT"}] * 3
    assert rows_of(ws, "SELECT name, duplicate FROM deliveries") == [(path.name, False)]
    json.dumps(report.to_dict())  # the CLI's --json output


def test_ingest_an_xlsx_file(ws: Workspace, inbox: Path) -> None:
    path = inbox / antom.file_name("settlement_detail", currency="USD", batch_id="2018122611021040123", ext="xlsx")
    path.write_bytes(antom.write_report("settlement_detail", detail_rows("2018122611021040123", 2), fmt="xlsx"))
    out = ws.ingest([path]).files[0]
    assert (out.status, out.report, out.rows) == ("new", "settlement_detail", 2)
    assert rows_of(ws, f"SELECT line_no, settlement_minor FROM ({ws.report_lines_sql()})") == [(2, 1450), (3, 1451)]
    assert list((ws.root / warehouse.TMP_DIR).iterdir()) == []  # the parse view is cleaned up


def test_ingesting_the_same_bytes_again_changes_nothing(ws: Workspace, inbox: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = settlement_detail(inbox, "2018122611021040123", n=4)
    renamed = inbox / "other" / "SETTLEMENT_DETAIL_102218800_20181227.csv"
    renamed.parent.mkdir()
    renamed.write_bytes(path.read_bytes())
    first = ws.ingest([path]).files[0]
    before = {t: count(ws, t) for t in ("files", "report_lines", "declared", "problems")}

    def must_not_parse(*args: Any, **kwargs: Any) -> ParsedFile:
        raise AssertionError("a known file must not be parsed again")

    monkeypatch.setattr(registry, "parse_file", must_not_parse)
    report = ws.ingest([path, renamed])

    assert [(f.status, f.sha256, f.rows, f.report) for f in report.files] == [
        ("duplicate", first.sha256, 4, "settlement_detail")] * 2
    assert {t: count(ws, t) for t in before} == before
    assert rows_of(ws, "SELECT first_name FROM files") == [(path.name,)]
    assert rows_of(ws, "SELECT name, duplicate FROM deliveries ORDER BY delivery_id") == [
        (path.name, False), (path.name, True), (renamed.name, True)]


def test_a_bad_file_is_quarantined_and_the_others_are_loaded(ws: Workspace, inbox: Path) -> None:
    good1 = settlement_detail(inbox, "2018122611021040001", n=2)
    bad = settlement_detail(inbox, "2018122611021040002", n=3)
    text = bad.read_bytes().decode()
    lines = text.split("\n")
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("settlementAmountValue")] = "14.515"  # USD has 2 decimals
    lines[2] = ",".join(cells)
    bad.write_bytes("\n".join(lines).encode())
    good2 = settlement_detail(inbox, "2018122611021040003", n=1)
    junk = inbox / "notes.txt"
    junk.write_bytes(b"not a report at all\n")

    report = ws.ingest([good1, bad, good2, junk])

    assert [f.status for f in report.files] == ["new", "quarantined", "new", "quarantined"]
    assert not report.ok and report.count("quarantined") == 2
    quarantined = report.files[1]
    [problem] = quarantined.problems
    assert isinstance(problem, errors.TooManyDecimals)
    assert (problem.file, problem.line, problem.column, problem.column_index) == (
        bad.name, 3, "settlementAmountValue", header.index("settlementAmountValue") + 1)
    assert isinstance(report.files[3].problems[0], errors.UnknownFormat)
    # stored: status, reason and the typed problem; the raw bytes are kept, no line of it is loaded
    [(status, reason, n_err)] = rows_of(ws, "SELECT status, reason, error_count FROM files WHERE sha256 = ?",
                                        [quarantined.sha256])
    assert (status, n_err) == ("quarantined", 1)
    assert reason == str(problem) and f"{bad.name}:3" in reason
    assert [p.to_dict() for p in ws.problems(quarantined.sha256)] == [problem.to_dict()]
    assert ws.archive.path_of(quarantined.sha256).read_bytes() == bad.read_bytes()
    assert ws.archive.exists(sha_of(junk))
    loaded = rows_of(ws, f"SELECT source_name, count(*) FROM ({ws.report_lines_sql()}) GROUP BY 1 ORDER BY 1")
    assert loaded == sorted([(good1.name, 2), (good2.name, 1)])
    assert rows_of(ws, "SELECT count(*) FROM report_lines WHERE source_sha256 = ?", [quarantined.sha256]) == [(0,)]
    # offering the bad file again does not re-parse it: still quarantined, recognised as a duplicate
    again = ws.ingest([bad]).files[0]
    assert (again.status, again.rows) == ("duplicate", 0)
    assert count(ws, "problems") == 2


def test_an_unreadable_path_fails_alone(ws: Workspace, inbox: Path) -> None:
    good = settlement_detail(inbox, "2018122611021040123")
    report = ws.ingest([inbox / "missing.csv", good])
    assert [f.status for f in report.files] == ["failed", "new"]
    assert isinstance(report.files[0].problems[0], LoadError)
    assert report.files[0].sha256 is None


def test_declared_figures_are_loaded_with_their_lines(ws: Workspace, inbox: Path) -> None:
    path = settlement_summary(inbox, "2018122611021040123")
    out = ws.ingest([path]).files[0]
    assert out.status == "new" and out.report == "settlement_summary"
    declared = rows_of(ws, "SELECT scope, figure, value, currency, source_sha256, line_no FROM declared "
                           "WHERE figure IN ('count', 'settlement', 'fee') ORDER BY figure")
    assert declared == [("TOTAL", "count", 2, None, out.sha256, 2), ("TOTAL", "fee", -100, "USD", out.sha256, 2),
                        ("TOTAL", "settlement", 2900, "USD", out.sha256, 2)]


def test_a_failure_while_loading_leaves_nothing_half_loaded(ws: Workspace, inbox: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    before = settlement_detail(inbox, "2018122611021040001", n=2)
    victim = settlement_summary(inbox, "2018122611021040002")
    after = settlement_detail(inbox, "2018122611021040003", n=2)
    real = ParsedFile.declared_arrow

    def explode(self: ParsedFile) -> pa.Table:
        if self.report == "settlement_summary":  # after its lines went in, inside the same transaction
            raise OSError(28, "No space left on device")
        return real(self)

    monkeypatch.setattr(ParsedFile, "declared_arrow", explode)
    report = ws.ingest([before, victim, after])

    assert [f.status for f in report.files] == ["new", "quarantined", "new"]
    [problem] = report.files[1].problems
    assert isinstance(problem, LoadError) and "No space left" in problem.message
    sha = report.files[1].sha256
    assert rows_of(ws, "SELECT count(*) FROM report_lines WHERE source_sha256 = ?", [sha]) == [(0,)]
    assert rows_of(ws, "SELECT count(*) FROM declared WHERE source_sha256 = ?", [sha]) == [(0,)]
    assert rows_of(ws, "SELECT status, reason FROM files WHERE sha256 = ?", [sha]) == [("quarantined", str(problem))]
    assert count(ws, "report_lines") == 4
    assert ws.archive.exists(sha)

    # the cause is gone: offering the file again loads it, as if the failure never happened
    monkeypatch.undo()
    retry = ws.ingest([victim]).files[0]
    assert (retry.status, retry.sha256, retry.rows) == ("new", sha, 1)
    assert rows_of(ws, "SELECT status, reason FROM files WHERE sha256 = ?", [sha]) == [("parsed", None)]
    assert ws.problems(sha) == []
    assert rows_of(ws, "SELECT count(*) FROM declared WHERE source_sha256 = ?", [sha])[0][0] > 0
    assert count(ws, "files") == 3


def test_a_file_changing_between_archive_and_parse_is_not_loaded(ws: Workspace, inbox: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = settlement_detail(inbox, "2018122611021040123")
    monkeypatch.setattr(warehouse.os, "symlink", _no_symlinks)  # parse the original file instead
    real_put = ws.archive.put_file

    def put_then_change(p: Path) -> Any:
        result = real_put(p)
        p.write_bytes(p.read_bytes().replace(b"14.50", b"99.99"))
        return result

    monkeypatch.setattr(ws.archive, "put_file", put_then_change)
    out = ws.ingest([path]).files[0]
    assert out.status == "quarantined"
    assert isinstance(out.problems[0], LoadError) and "not the archived ones" in out.problems[0].message
    assert count(ws, "report_lines") == 0


def _no_symlinks(src: object, dst: object) -> None:
    raise OSError("symlinks not allowed")


def test_reopening_sees_everything(tmp_path: Path, inbox: Path) -> None:
    root = tmp_path / "ws"
    good = settlement_detail(inbox, "2018122611021040001", n=2)
    bad = inbox / antom.file_name("settlement_detail", currency="USD", batch_id="2018122611021040002")
    bad.write_bytes(b"")
    with Workspace.init(root) as w:
        first = w.ingest([good, bad])
        lines = w.con.sql(w.report_lines_sql()).to_arrow_table()
        files = w.files()
    with Workspace.open(root) as w:
        assert w.con.sql(w.report_lines_sql()).to_arrow_table().equals(lines)
        assert w.files().equals(files)
        assert [p.to_dict() for p in w.problems(first.files[1].sha256)] == [
            p.to_dict() for p in first.files[1].problems]
        assert isinstance(w.problems(first.files[1].sha256)[0], errors.EmptyFile)
        again = w.ingest([good, bad])
        assert [f.status for f in again.files] == ["duplicate", "duplicate"]
        assert w.con.sql(w.report_lines_sql()).to_arrow_table().equals(lines)


# ---------------------------------------------------------------------------------------------
# runs, checks, exceptions


def _checks(*ids: str) -> pa.Table:
    lineage = [{"sha256": "a" * 64, "name": "f.csv", "line": 2}]
    return pa.Table.from_pylist(
        [{"check_id": c, "reason_code": "AN-1", "status": "fail" if i % 2 else "pass", "family": "antom",
          "report": "settlement_detail", "scope": "TOTAL", "currency": "USD", "expected": 100 + i, "actual": 100,
          "lineage": lineage, "detail": f"check {c}"} for i, c in enumerate(ids)],
        schema=CHECK_RESULT,
    )


def test_run_ids_sort_in_creation_order(ws: Workspace) -> None:
    ids = [ws.new_run("check") for _ in range(12)]
    assert ids == sorted(ids) and len(set(ids)) == 12
    assert rows_of(ws, "SELECT kind, seq FROM runs ORDER BY run_id")[-1] == ("check", 12)


def test_checks_round_trip_in_their_order(ws: Workspace) -> None:
    assert ws.latest_checks().num_rows == 0
    r1 = ws.new_run("check")
    ws.save_checks(_checks("z", "a", "m"), r1)
    got = ws.latest_checks()
    assert got.schema.equals(CHECK_RESULT) and got.equals(_checks("z", "a", "m"))
    ws.save_checks(_checks("b"), r1)  # saving a run again replaces its rows
    assert ws.latest_checks().column("check_id").to_pylist() == ["b"]
    r2 = ws.new_run("check")
    ws.save_checks(_checks("q", "p"), r2)
    assert ws.latest_checks().column("check_id").to_pylist() == ["q", "p"]
    ws.new_run("check")  # a run that saved nothing does not hide the last results
    assert ws.latest_checks().column("check_id").to_pylist() == ["q", "p"]
    r4 = ws.new_run("check")
    ws.save_checks(CHECK_RESULT.empty_table(), r4)  # ... but a run that found nothing does
    assert ws.latest_checks().num_rows == 0


def test_exceptions_from_a_table_in_the_connection(ws: Workspace) -> None:
    lineage = [{"sha256": "b" * 64, "name": "s.csv", "line": 7}]
    rows = pa.Table.from_pylist(
        [{"exception_class": "missing_in_ledger", "reason_code": "MISSING_IN_LEDGER", "match_key": key,
          "report_lines": lineage} for key in ("R3", "R1", "R2")], schema=EXCEPTION)
    ws.con.register("produced", rows)
    ws.con.execute("CREATE TEMP TABLE match_out AS SELECT * FROM produced")
    ws.con.unregister("produced")
    with pytest.raises(errors.AlireconError, match="unknown run"):
        ws.save_exceptions("match_out", "00000099-nope")
    run = ws.new_run("match")
    ws.save_exceptions("match_out", run)
    got = ws.latest_exceptions()
    assert got.schema.equals(EXCEPTION)
    assert got.column("match_key").to_pylist() == ["R3", "R1", "R2"]
    assert got.column("report_lines").to_pylist()[0] == [{"sha256": "b" * 64, "name": "s.csv", "line": 7}]
    assert got.column("detail").to_pylist() == [None] * 3
    run2 = ws.new_run("match")
    ws.save_exceptions(EXCEPTION.empty_table(), run2)
    assert ws.latest_exceptions().num_rows == 0
    assert rows_of(ws, "SELECT run_id, exception_count FROM runs WHERE exception_count IS NOT NULL ORDER BY seq") == [
        (run, 3), (run2, 0)]


# ---------------------------------------------------------------------------------------------
# the ledger


LEDGER_HEADER = "merchant_ref_id,record_type,amount,currency,status,original_merchant_ref_id,occurred_at\n"


def ledger_file(folder: Path, name: str, rows: list[tuple[str, str, str]]) -> Path:
    path = folder / name
    body = "".join(f"{ref},{kind},{amount},USD,SUCCESS,,2018-12-25T10:00:00+08:00\n" for ref, kind, amount in rows)
    path.write_text(LEDGER_HEADER + body)
    return path


def ledger_refs(ws: Workspace) -> list[tuple[str, int, str, int]]:
    return [tuple(r) for r in rows_of(  # type: ignore[misc]
        ws, f"SELECT merchant_ref_id, amount_minor, source_name, ledger_row FROM ({ws.ledger_lines_sql()})")]


def test_ledger_ingest_and_replacement(ws: Workspace, inbox: Path) -> None:
    config = LedgerConfig()
    v1 = ledger_file(inbox, "orders.csv", [("R1", "PAYMENT", "14.50"), ("R2", "PAYMENT", "3.00")])

    first = ws.ingest_ledger(v1, config)
    assert (first.status, first.rows, first.replaced, first.sha256) == ("new", 2, (), sha_of(v1))
    assert ledger_refs(ws) == [("R1", 1450, "orders.csv", 2), ("R2", 300, "orders.csv", 3)]
    assert ws.archive.path_of(first.sha256).read_bytes() == v1.read_bytes()
    got = ws.con.sql(ws.ledger_lines_sql()).to_arrow_table()
    assert got.schema.names == LEDGER_LINE.names

    again = ws.ingest_ledger(v1, config)
    assert (again.status, again.rows) == ("unchanged", 2)
    assert count(ws, "ledger_files") == 1 and count(ws, "ledger_lines") == 2

    v2 = ledger_file(inbox, "orders-export-2.csv", [("R1", "PAYMENT", "14.50"), ("R3", "REFUND", "-1.25")])
    second = ws.ingest_ledger(v2, config)
    assert (second.status, second.rows, second.replaced) == ("new", 2, (first.sha256,))
    assert ledger_refs(ws) == [("R1", 1450, "orders-export-2.csv", 2), ("R3", -125, "orders-export-2.csv", 3)]
    assert count(ws, "ledger_lines") == 2  # the replaced version's lines are gone, its bytes are not
    assert ws.archive.exists(first.sha256)

    # a bad version is quarantined and the current one stays
    (inbox / "later").mkdir()
    bad = ledger_file(inbox / "later", "orders.csv", [("R9", "PAYMENT", "1.005")])
    third = ws.ingest_ledger(bad, config)
    assert third.status == "quarantined" and not third.ok
    assert isinstance(third.problems[0], errors.TooManyDecimals) and third.problems[0].line == 2
    assert [r[0] for r in ledger_refs(ws)] == ["R1", "R3"]
    assert ws.ingest_ledger(bad, config).status == "quarantined"  # remembered, not re-read
    assert count(ws, "ledger_files") == 3

    # going back to the first bytes makes them current again
    v1_again = ws.ingest_ledger(v1, config)
    assert (v1_again.status, v1_again.replaced) == ("new", (second.sha256,))
    assert [r[0] for r in ledger_refs(ws)] == ["R1", "R2"]

    # another ledger name lives beside it
    other = ws.ingest_ledger(ledger_file(inbox, "psp.csv", [("P1", "PAYMENT", "1.00")]), config, name="psp")
    assert other.status == "new" and other.replaced == ()
    assert sorted(r[0] for r in ledger_refs(ws)) == ["P1", "R1", "R2"]


def test_ledger_extras_are_an_array_named_by_the_ledger_file(ws: Workspace, inbox: Path) -> None:
    path = inbox / "orders.csv"
    path.write_text(LEDGER_HEADER.rstrip("\n") + ",Memo,Till\n"
                    "R1,PAYMENT,1.00,USD,SUCCESS,,2018-12-25T10:00:00+08:00,first,T1\n"
                    "R2,PAYMENT,2.00,USD,SUCCESS,,2018-12-25T10:00:00+08:00,,T2\n")
    assert ws.ingest_ledger(path, LedgerConfig()).status == "new"
    [(names,)] = rows_of(ws, "SELECT extras_names FROM ledger_files")
    extras = [e for (e,) in rows_of(ws, f"SELECT extras FROM ({ws.ledger_lines_sql()})")]
    assert (json.loads(names), extras) == (["Memo", "Till"], ['["first","T1"]', '[null,"T2"]'])
    assert [extras_dict(e, json.loads(names)) for e in extras] == [{"Memo": "first", "Till": "T1"}, {"Till": "T2"}]


def test_ledger_replacement_is_all_or_nothing(ws: Workspace, inbox: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import alirecon.ledger as ledger_mod

    config = LedgerConfig()
    v1 = ledger_file(inbox, "orders.csv", [("R1", "PAYMENT", "14.50")])
    assert ws.ingest_ledger(v1, config).status == "new"
    real_read = ledger_mod.read_ledger

    def read_then_break(*args: Any, **kwargs: Any) -> Any:
        parsed = real_read(*args, **kwargs)
        parsed.lines_sql = lambda: "SELECT * FROM no_such_table"  # fails after the old lines were deleted
        return parsed

    monkeypatch.setattr(ledger_mod, "read_ledger", read_then_break)
    v2 = ledger_file(inbox, "orders2.csv", [("R2", "PAYMENT", "1.00")])
    out = ws.ingest_ledger(v2, config)
    assert out.status == "quarantined" and isinstance(out.problems[0], LoadError)
    assert [r[0] for r in ledger_refs(ws)] == ["R1"]

    monkeypatch.undo()
    retry = ws.ingest_ledger(v2, config)  # a load failure is retried, not remembered
    assert (retry.status, [r[0] for r in ledger_refs(ws)]) == ("new", ["R2"])
    missing = ws.ingest_ledger(inbox / "no-such.csv", config)
    assert (missing.status, missing.sha256) == ("failed", None) and isinstance(missing.problems[0], LoadError)


def test_changed_ledger_settings_read_the_same_bytes_again(ws: Workspace, inbox: Path) -> None:
    path = ledger_file(inbox, "orders.csv", [("R1", "PAYMENT", "1450")])
    major = ws.ingest_ledger(path, LedgerConfig())
    minor = ws.ingest_ledger(path, LedgerConfig(amount_unit="minor"))
    assert (major.status, minor.status) == ("new", "new")
    assert minor.replaced == (major.sha256,)
    assert [r[1] for r in ledger_refs(ws)] == [1450]
    assert ws.ingest_ledger(path, LedgerConfig(amount_unit="minor")).status == "unchanged"



def test_a_manifest_made_before_the_openapi_source_accepts_it_after_reopening(tmp_path: Path) -> None:
    """remote_files once had CHECK (source IN ('sftp', 'folder')): reopened, its rows stay and 'openapi' fits."""
    root, now = tmp_path / "ws", datetime(2026, 9, 4, 1, tzinfo=UTC)
    old = [(n, t.replace(", 'openapi'", ""), nn) for n, t, nn in warehouse._TABLES["remote_files"]]
    with Workspace.init(root) as w:
        w.remote_seen("acc", "sftp", "/d/a.csv", "a.csv", 6, now, now)
        w.con.execute("ALTER TABLE remote_files RENAME TO kept")
        warehouse._ensure_table(w.con, "remote_files", old)
        w.con.execute("INSERT INTO remote_files SELECT * FROM kept; DROP TABLE kept")
        with pytest.raises(Exception, match="CHECK"):  # the cause, not a later 'transaction is aborted'
            w.remote_seen("acc", "openapi", "trade/2026-09-03", "x.zip", 1, now, now)
        w.remote_seen("acc", "sftp", "/d/b.csv", "b.csv", 7, now, now)  # the connection still works
        before = rows_of(w, "SELECT * FROM remote_files ORDER BY file_id")
    with Workspace.open(root) as w:
        assert rows_of(w, "SELECT * FROM remote_files ORDER BY file_id") == before
        skip, row = w.remote_seen("acc", "openapi", "trade/2026-09-03", "x.zip", 1, now, now)
        assert (skip, row.source, row.state) == (False, "openapi", "listed")

@given(st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s and s != "other"))
def test_extra_sql_finds_any_header_name(name: str) -> None:
    """Header names are provider text (quotes, dots, '$', backslashes, CJK): each reads back its own cell, from
    an array (by the file's names) and from an object (lines loaded before extras became arrays)."""
    import duckdb

    con = duckdb.connect()
    [(old,)] = con.execute(f"SELECT {extra_sql(name, None, 'e')} FROM (SELECT CAST(json_object(?, 'v', 'other', 'w') "
                           "AS VARCHAR) AS e)", [name]).fetchall()
    [(new, missing)] = con.execute(
        f"SELECT {extra_sql(name, ['other', name], 'e')}, {extra_sql(name, ['other'], 'e')} "
        "FROM (SELECT CAST(to_json(['w', 'v']) AS VARCHAR) AS e)").fetchall()
    assert (old, new, missing) == ("v", "v", None)
