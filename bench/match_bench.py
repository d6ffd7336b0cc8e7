"""Benchmark: the matching stage alone, ``recon.match.reconcile()`` on N report lines x N ledger rows.

Why a second benchmark beside recon_bench.py: that one times parse + match end to end; this one isolates the
matcher so its cost can be compared with the floor DuckDB itself sets for the same work:
  baseline  = bare DuckDB on the same tables: count(*) OVER (PARTITION BY key) on the report side, FULL OUTER
              JOIN with the ledger, CASE classification, written into a table;
  reconcile = ``reconcile()`` with every rule (tie gate, window, statuses, refunds, lineage lists, details).
Each runs in its own child process (``os.wait4`` gives its peak RSS) on a DuckDB database file generated once
per N (cached in --workdir), with ``memory_limit`` and a spill ``temp_directory`` set in both.

    python bench/match_bench.py --rows 1000000 --rows 5000000 --rows 10000000 --repeat 3

Data (deterministic; h = hash of the row number mod 100000, so each fate is a fixed share of the rows):
0.3% of ledger rows missing from the report, 0.2% amount changes, 0.1% report duplicates, 0.1% currency
changes, 0.3% extra report lines, 0.05% ledger rows not successful, 0.05% ledger duplicates, 0.05% ledger rows
outside the window, 0.5% of payments refunded on both sides (0.02% for more than the payment). The expected
count of every class follows from those fates; a run whose counts differ is reported as INVALID.
``--matcher path/to/match.py`` times another version of the module (e.g. a saved copy, for before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

from _child import run_child  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
DATA_VERSION = 1  # bump when GENERATE changes, so cached databases are rebuilt

# Shares of h in [0, 100000): the fate of base row i.
FATES = {
    "dropped": (0, 300),          # in the ledger only -> missing_in_report
    "amount": (300, 500),         # report amount + 1 -> amount_mismatch
    "dup_report": (500, 600),     # report line twice -> duplicate_in_report
    "currency": (600, 700),       # report in EUR -> currency_mismatch
    "extra": (700, 1000),         # an extra report line EXTRA-i (the base row itself is clean) -> missing_in_ledger
    "failed": (1000, 1050),       # ledger status FAILED -> status_mismatch
    "dup_ledger": (1050, 1100),   # ledger row twice -> duplicate_in_ledger
    "outside": (1100, 1150),      # ledger only, a month later -> out_of_window, no exception
    "refund_over": (1200, 1220),  # refunded on both sides for more than the payment -> refund_exceeds_payment
    "refund": (1220, 1700),       # refunded on both sides for a third of the payment -> matched
}

GENERATE = r"""
import duckdb, sys
from alirecon.formats.engine import _duck_type
from alirecon.schema import LEDGER_LINE, REPORT_LINE
n, path, fates = int(sys.argv[1]), sys.argv[2], __import__('json').loads(sys.argv[3])
con = duckdb.connect(path)
con.execute("SET TimeZone='UTC'")
def between(name):
    lo, hi = fates[name]
    return f"(h >= {lo} AND h < {hi})"
for name, schema in (("report_lines", REPORT_LINE), ("ledger_lines", LEDGER_LINE)):
    cols = ", ".join(f'"{f.name}" {_duck_type(f.type)}' for f in schema)
    con.execute(f"CREATE TABLE {name} ({cols})")
con.execute(f'''
CREATE TEMP TABLE base AS
SELECT i, CAST(hash(i * 7919 + 42) % 100000 AS BIGINT) AS h,
       'PAYREQ-' || lpad(CAST(i AS VARCHAR), 10, '0') AS req,
       CAST(100 + hash(i) % 500000 AS BIGINT) AS amount,
       TIMESTAMPTZ '2026-11-02 00:00:00+08' + to_seconds(CAST(i % 604800 AS BIGINT)) AS ts
FROM range({n}) t(i)''')
refunded = f"({between('refund_over')} OR {between('refund')})"
refund_amount = f"CASE WHEN {between('refund_over')} THEN -(amount + 1) ELSE -(amount // 3) END"
# one row per ledger record: (i, seq, type, key, link, amount, ccy, status, ts)
con.execute(f'''
CREATE TEMP VIEW ledger_rows AS
SELECT i, 0 AS seq, 'PAYMENT' AS rt, req AS k, NULL AS link, amount, 'USD' AS ccy,
       CASE WHEN {between('failed')} THEN 'FAILED' ELSE 'SUCCESS' END AS status,
       CASE WHEN {between('outside')} THEN ts + INTERVAL 30 DAY ELSE ts END AS ts FROM base
UNION ALL SELECT i, 1, 'PAYMENT', req, NULL, amount, 'USD', 'SUCCESS', ts FROM base WHERE {between('dup_ledger')}
UNION ALL SELECT i, 2, 'REFUND', 'RFDREQ-' || lpad(CAST(i AS VARCHAR), 10, '0'), req, {refund_amount}, 'USD',
                 'SUCCESS', ts + INTERVAL 1 HOUR FROM base WHERE {refunded}''')
con.execute(f'''
CREATE TEMP VIEW report_rows AS
SELECT i, 0 AS seq, 'PAYMENT' AS rt, req AS k, NULL AS link,
       CASE WHEN {between('amount')} THEN amount + 1 ELSE amount END AS amount,
       CASE WHEN {between('currency')} THEN 'EUR' ELSE 'USD' END AS ccy, ts FROM base
       WHERE NOT {between('dropped')} AND NOT {between('outside')}
UNION ALL SELECT i, 1, 'PAYMENT', req, NULL, amount, 'USD', ts FROM base WHERE {between('dup_report')}
UNION ALL SELECT i, 2, 'PAYMENT', 'EXTRA-' || lpad(CAST(i AS VARCHAR), 10, '0'), NULL,
                 CAST(100 + hash(i + 1) % 5000 AS BIGINT), 'USD', ts FROM base WHERE {between('extra')}
UNION ALL SELECT i, 3, 'REFUND', 'RFDREQ-' || lpad(CAST(i AS VARCHAR), 10, '0'), req, {refund_amount}, 'USD',
                 ts + INTERVAL 1 HOUR FROM base WHERE {refunded}''')
con.execute(f'''
INSERT INTO report_lines BY NAME
SELECT 'antom' AS family, 'settlement_detail' AS report, rt AS record_type, '1022188000000000001' AS account_id,
       '2026110219' || lpad(CAST(i * 4 + seq AS VARCHAR), 12, '0') AS provider_txn_id, k AS merchant_ref_id,
       'ORD-' || CAST(i AS VARCHAR) AS order_id, link AS original_merchant_ref_id, amount AS amount_minor,
       ccy AS amount_currency, amount - amount // 50 AS settlement_minor, ccy AS settlement_currency,
       -abs(amount // 50) AS fee_minor, ccy AS fee_currency, ts AS occurred_at, 480 AS occurred_offset_min,
       rt AS raw_type, TIMESTAMPTZ '2026-11-10 06:00:00+08' AS settled_at, 480 AS settled_offset_min,
       '2026111011021040001' AS settlement_batch_id, repeat('a', 64) AS source_sha256,
       'settlementItems_USD_2026111011021040001_{n}.csv' AS source_name,
       row_number() OVER (ORDER BY i, seq) + 1 AS line_no
FROM report_rows''')
con.execute(f'''
INSERT INTO ledger_lines BY NAME
SELECT 'antom' AS family, rt AS record_type, k AS merchant_ref_id, link AS original_merchant_ref_id, status,
       amount AS amount_minor, ccy AS amount_currency, ts AS occurred_at, 480 AS occurred_offset_min,
       repeat('b', 64) AS source_sha256, 'ledger_{n}.csv' AS source_name,
       row_number() OVER (ORDER BY i, seq) + 1 AS ledger_row
FROM ledger_rows''')
counts = {name: con.execute(f"SELECT count(*) FROM base WHERE {between(name)}").fetchall()[0][0] for name in fates}
counts["rows"] = n
counts["report_lines"] = con.execute("SELECT count(*) FROM report_lines").fetchall()[0][0]
counts["ledger_lines"] = con.execute("SELECT count(*) FROM ledger_lines").fetchall()[0][0]
con.execute("CHECKPOINT")
con.close()
print(__import__('json').dumps(counts))
"""

SETUP = r"""
import duckdb, json, sys, time
from alirecon.formats.engine import install_macros
path, mem, spill = sys.argv[1:4]
con = duckdb.connect(path, read_only=True)
con.execute("SET TimeZone='UTC'")
con.execute(f"SET memory_limit='{mem}'")
con.execute(f"SET temp_directory='{spill}'")
install_macros(con)
"""

BASELINE = SETUP + r"""
t0 = time.perf_counter()
con.execute('''CREATE TEMP TABLE classified AS
  WITH r AS (SELECT merchant_ref_id, record_type, amount_minor, amount_currency,
                    count(*) OVER (PARTITION BY merchant_ref_id, record_type) AS c FROM report_lines)
  SELECT CASE WHEN l.merchant_ref_id IS NULL THEN 'missing_in_ledger'
              WHEN r.merchant_ref_id IS NULL THEN 'missing_in_report'
              WHEN r.c > 1 THEN 'duplicate_in_report'
              WHEN r.amount_currency <> l.amount_currency THEN 'currency_mismatch'
              WHEN r.amount_minor <> l.amount_minor THEN 'amount_mismatch'
              ELSE 'matched' END AS k, r.merchant_ref_id AS report_key, l.merchant_ref_id AS ledger_key
  FROM r FULL OUTER JOIN ledger_lines AS l
    ON r.merchant_ref_id = l.merchant_ref_id AND r.record_type = l.record_type''')
seconds = time.perf_counter() - t0
counts = dict(con.execute("SELECT k, count(DISTINCT coalesce(report_key, ledger_key)) FROM classified GROUP BY 1")
              .fetchall())
print(json.dumps({"seconds": seconds, "counts": counts}))
"""

RECONCILE = SETUP + r"""
import importlib.util
matcher = sys.argv[4]
if matcher:  # another version of the module, imported as a sibling so its relative imports resolve
    spec = importlib.util.spec_from_file_location("alirecon.recon._bench_match", matcher)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    reconcile = module.reconcile
else:
    from alirecon.recon.match import reconcile
t0 = time.perf_counter()
res = reconcile(con, report_lines="report_lines", ledger_lines="ledger_lines", family="antom",
                report="settlement_detail")
seconds = time.perf_counter() - t0
rows = con.execute(f"SELECT count(*), count(*) FILTER (len(report_lines) + len(ledger_rows) = 0) FROM {res.table}")
total, without_lineage = rows.fetchall()[0]
print(json.dumps({"seconds": seconds, "counts": res.counts, "out_of_window": res.out_of_window,
                  "exceptions": total, "without_lineage": without_lineage}))
"""


def expected_counts(fates: dict[str, int]) -> dict[str, int]:
    """What reconcile() must report, from the fates the generator applied (module docstring of match.py)."""
    flagged = ("dropped", "amount", "dup_report", "currency", "failed", "dup_ledger", "outside")
    return {
        "missing_in_report": fates["dropped"],
        "missing_in_ledger": fates["extra"],
        "amount_mismatch": fates["amount"],
        "currency_mismatch": fates["currency"],
        "status_mismatch": fates["failed"],
        "duplicate_in_report": fates["dup_report"],
        "duplicate_in_ledger": fates["dup_ledger"],
        "link_mismatch": 0,
        "refund_exceeds_payment": fates["refund_over"],
        # every clean payment key, plus each refund key (the refund lines agree on both sides)
        "matched": fates["rows"] - sum(fates[f] for f in flagged) + fates["refund_over"] + fates["refund"],
        "out_of_window": fates["outside"],
    }


def database(n: int, workdir: Path) -> tuple[Path, dict[str, int]]:
    """The generated tables for N (built once, cached with their fate counts)."""
    path = workdir / f"match_{n}_v{DATA_VERSION}.duckdb"
    meta = path.with_suffix(".json")
    if not path.exists() or not meta.exists():
        print(f"generating {n:,} rows ...", flush=True)
        path.unlink(missing_ok=True)
        fates, _, _ = run_child(GENERATE, str(n), str(path), json.dumps(FATES))
        meta.write_text(json.dumps(fates))
    return path, json.loads(meta.read_text())


def best_of(repeat: int, code: str, *args: str) -> tuple[dict, float, float]:
    """The fastest of ``repeat`` runs (the machine may be shared: the minimum is the least disturbed run)."""
    return min((run_child(code, *args) for _ in range(repeat)), key=lambda run: run[0]["seconds"])


def bench(n: int, workdir: Path, mem: str, matcher: str, repeat: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    path, fates = database(n, workdir)
    spill = workdir / "spill"
    spill.mkdir(exist_ok=True)
    base, base_wall, base_rss = best_of(repeat, BASELINE, str(path), mem, str(spill))
    ours, ours_wall, ours_rss = best_of(repeat, RECONCILE, str(path), mem, str(spill), matcher)
    expected = expected_counts(fates)
    found = {**ours["counts"], "out_of_window": ours["out_of_window"]}
    wrong = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    valid = not wrong and ours["without_lineage"] == 0
    return {"rows": n, "report_lines": fates["report_lines"], "ledger_lines": fates["ledger_lines"],
            "baseline_s": round(base["seconds"], 2), "reconcile_s": round(ours["seconds"], 2),
            "ratio": round(ours["seconds"] / base["seconds"], 2),
            "baseline_rss_gib": round(base_rss, 2), "reconcile_rss_gib": round(ours_rss, 2),
            "child_wall_s": {"baseline": round(base_wall, 2), "reconcile": round(ours_wall, 2)},
            "exceptions": ours["exceptions"], "baseline_counts": base["counts"],
            "wrong_counts_expected_vs_found": wrong, "valid": valid}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append", help="N (repeatable); default 1000000")
    ap.add_argument("--workdir", type=Path, default=HERE / "out")
    ap.add_argument("--memory-limit", default="2GB", help="DuckDB memory_limit for both runs")
    ap.add_argument("--matcher", default="", help="path of another match.py to time instead of the installed one")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side; the fastest is reported")
    ap.add_argument("--json", action="store_true", help="print every figure, not only the summary line")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}, memory_limit {args.memory_limit}, best of {args.repeat}", flush=True)
    for n in args.rows or [1_000_000]:
        r = bench(n, args.workdir, args.memory_limit, args.matcher, args.repeat)
        if args.json or not r["valid"]:
            print(json.dumps(r, indent=2))
        print(f"N={n:,}: baseline {r['baseline_s']} s ({r['baseline_rss_gib']} GiB peak), reconcile "
              f"{r['reconcile_s']} s ({r['reconcile_rss_gib']} GiB peak), ratio {r['ratio']}x, "
              f"{r['exceptions']:,} exceptions, {'valid' if r['valid'] else 'INVALID'}", flush=True)


if __name__ == "__main__":
    main()
