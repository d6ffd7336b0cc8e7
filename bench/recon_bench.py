"""Benchmark: end-to-end reconcile of N Antom settlement-detail rows against N ledger rows.

Measures, on the same generated files, in separate child processes (so peak RSS is per run):
  alirecon  = `alirecon reconcile --report <settlement details> --ledger <ledger>` (one-shot mode): parse
              with every validation rule, match, exceptions written to Parquet;
  baseline  = bare DuckDB: read_csv of both files with typed DECIMAL columns, full outer join on the key,
              classification into the same classes, written to Parquet.
Both must find the same number of exceptions per class, else the run is reported as invalid. Each side
runs ``--repeat`` times (alternating) and its best wall time is reported.

    python bench/recon_bench.py --rows 1000000 --rows 10000000

Data (seed 42): ~1% of rows disturbed: 0.3% of ledger rows dropped from the report, 0.3% extra report rows,
0.2% amount mismatches, 0.1% report rows duplicated, 0.1% currency mismatches. Not a timed test: it prints
figures; the README quotes them with this command.
"""

from __future__ import annotations

import json
from pathlib import Path

from _child import print_machine, rows_arguments, run_child  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent

GENERATE = r"""
import duckdb, sys
n, report, ledger = int(sys.argv[1]), sys.argv[2], sys.argv[3]
con = duckdb.connect()
con.execute("SET threads=2")
# r: one row per ledger entry with its fate. h = a stable pseudo-random number per row.
con.execute(f'''
CREATE TABLE base AS
SELECT i, CAST(hash(i * 7919 + 42) % 100000 AS BIGINT) AS h,
       'PAYREQ-' || lpad(CAST(i AS VARCHAR), 10, '0') AS req,
       CAST(100 + hash(i) % 500000 AS BIGINT) AS amount,  -- minor units, USD
       TIMESTAMPTZ '2026-11-02 00:00:00+08' + to_seconds(CAST(i % 604800 AS BIGINT)) AS ts
FROM range({n}) t(i)''')
# fates: 0-299 dropped from report, 300-499 amount mismatch, 500-599 duplicated, 600-699 currency mismatch
con.execute('''
CREATE VIEW report_rows AS
SELECT req, CASE WHEN h BETWEEN 300 AND 499 THEN amount + 1 ELSE amount END AS amount,
       CASE WHEN h BETWEEN 600 AND 699 THEN 'EUR' ELSE 'USD' END AS ccy, ts, i FROM base WHERE h >= 300
UNION ALL SELECT req, amount, 'USD', ts, i FROM base WHERE h BETWEEN 500 AND 599
UNION ALL SELECT 'EXTRA-' || lpad(CAST(i AS VARCHAR), 10, '0'), CAST(100 + hash(i + 1) % 5000 AS BIGINT), 'USD', ts, i
          FROM base WHERE h BETWEEN 700 AND 999''')
money = ("CASE WHEN {0} < 0 THEN '-' ELSE '' END || CAST(abs({0}) // 100 AS VARCHAR) || '.' || "
         "lpad(CAST(abs({0}) % 100 AS VARCHAR), 2, '0')")
con.execute(f'''
COPY (SELECT '2026111011021040001' AS settlementBatchId, '1022188000000000001' AS customerId,
             'Alipay_SG' AS acquirer, '2026110219' || lpad(CAST(i AS VARCHAR), 12, '0') AS transactionId,
             '' AS originalTransactionId, req AS transactionRequestId, '' AS originalTransactionRequestId,
             'ORD-' || CAST(i AS VARCHAR) AS referenceTransactionId, 'PAYMENT' AS transactionType,
             'ALIPAY_HK' AS paymentMethodType, 'AlipayHK' AS pspName,
             strftime(ts AT TIME ZONE 'Asia/Shanghai', '%Y-%m-%dT%H:%M:%S+08:00') AS paymentTime,
             '2026-11-10T06:00:00+08:00' AS settlementTime, 'CASHIER_PAYMENT' AS productCode,
             {money.format('amount')} AS transactionAmountValue, ccy AS transactionCurrency,
             {money.format('amount - amount // 50')} AS settlementAmountValue, ccy AS settlementCurrency,
             '' AS quoteCurrencyPair, '' AS quotePrice,
             {money.format('-(amount // 50)')} AS feeAmountValue, ccy AS feeCurrency
      FROM report_rows ORDER BY i, req) TO '{report}' (HEADER, DELIMITER ',', QUOTE '')''')
with open(report, 'a') as f:
    f.write('<END>\n')
con.execute(f'''
COPY (SELECT req AS order_ref, 'sale' AS kind, {money.format('amount')} AS amount, 'USD' AS ccy,
             'paid' AS state, strftime(ts AT TIME ZONE 'Asia/Shanghai', '%Y-%m-%dT%H:%M:%S+08:00') AS created_at
      FROM base ORDER BY i) TO '{ledger}' (HEADER, DELIMITER ',', QUOTE '')''')
"""

BASELINE = r"""
import duckdb, json, sys, time
report, ledger, out, mem = sys.argv[1:5]
t0 = time.perf_counter()
con = duckdb.connect()
con.execute(f"SET memory_limit='{mem}'")
con.execute(f'''CREATE TABLE p AS SELECT * FROM read_csv('{report}', header=true, ignore_errors=true,
    columns={{'settlementBatchId':'VARCHAR','customerId':'VARCHAR','acquirer':'VARCHAR','transactionId':'VARCHAR',
    'originalTransactionId':'VARCHAR','transactionRequestId':'VARCHAR','originalTransactionRequestId':'VARCHAR',
    'referenceTransactionId':'VARCHAR','transactionType':'VARCHAR','paymentMethodType':'VARCHAR','pspName':'VARCHAR',
    'paymentTime':'TIMESTAMPTZ','settlementTime':'TIMESTAMPTZ','productCode':'VARCHAR',
    'transactionAmountValue':'DECIMAL(18,2)','transactionCurrency':'VARCHAR','settlementAmountValue':'DECIMAL(18,2)',
    'settlementCurrency':'VARCHAR','quoteCurrencyPair':'VARCHAR','quotePrice':'VARCHAR',
    'feeAmountValue':'DECIMAL(18,2)','feeCurrency':'VARCHAR'}})''')
con.execute(f'''CREATE TABLE l AS SELECT * FROM read_csv('{ledger}', header=true, columns={{'order_ref':'VARCHAR',
    'kind':'VARCHAR','amount':'DECIMAL(18,2)','ccy':'VARCHAR','state':'VARCHAR','created_at':'TIMESTAMPTZ'}})''')
t1 = time.perf_counter()
con.execute(f'''COPY (
  WITH pd AS (SELECT *, count(*) OVER (PARTITION BY transactionRequestId) c FROM p)
  SELECT CASE WHEN l.order_ref IS NULL THEN 'missing_in_ledger'
              WHEN pd.transactionRequestId IS NULL THEN 'missing_in_report'
              WHEN pd.c > 1 THEN 'duplicate_in_report'
              WHEN pd.transactionCurrency <> l.ccy THEN 'currency_mismatch'
              WHEN pd.transactionAmountValue <> l.amount THEN 'amount_mismatch'
              ELSE 'matched' END AS k, pd.transactionRequestId, l.order_ref
  FROM pd FULL OUTER JOIN l ON pd.transactionRequestId = l.order_ref) TO '{out}' (FORMAT PARQUET)''')
counts = dict(con.execute(f'''SELECT k, count(DISTINCT coalesce(transactionRequestId, order_ref))
                             FROM '{out}' GROUP BY 1''').fetchall())
print(json.dumps({"read": t1 - t0, "join": time.perf_counter() - t1, "counts": counts}))
"""

ALIRECON = r"""
import json, sys, time
from pathlib import Path
from alirecon.config import LedgerConfig
from alirecon.oneshot import reconcile_files
report, ledger, out, mem = sys.argv[1:5]
cfg = LedgerConfig.model_validate({"name": "orders", "family": "antom", "refund_sign": "negate_reverse_types",
    "columns": {"merchant_ref_id": "order_ref", "record_type": "kind", "amount": "amount", "currency": "ccy",
                "status": "state", "occurred_at": "created_at"},
    "record_types": {"sale": "PAYMENT", "refund": "REFUND"}, "statuses": {"paid": "SUCCESS"}})
t0 = time.perf_counter()
res = reconcile_files([Path(report)], Path(ledger), cfg, out=Path(out), keep_extras=False, memory_limit=mem)
res.seconds["total"] = time.perf_counter() - t0
print(json.dumps({"seconds": res.seconds, "counts": res.counts.get("antom", {}),
                  "files_ok": [f["ok"] for f in res.files],
                  "ledger_ok": res.ledger.get("ok"), "exceptions": res.exception_count}))
"""


def bench(n: int, workdir: Path, mem: str, repeat: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / f"settlementItems_USD_2026111011021040001_{n}.csv"
    ledger = workdir / f"ledger_{n}.csv"
    if not report.exists() or not ledger.exists():
        print(f"generating {n:,} rows ...", flush=True)
        run_child(GENERATE + "\nprint('{}')", str(n), str(report), str(ledger))
    size = (report.stat().st_size + ledger.stat().st_size) / 1e9
    # Alternate the two, ``repeat`` times each, and keep each one's best wall time: the first read of a file
    # pays for the page cache and a shared machine is noisy; both sides get the same chances.
    base_runs, ours_runs = [], []
    for _ in range(repeat):
        base_runs.append(run_child(BASELINE, str(report), str(ledger), str(workdir / "baseline.parquet"), mem))
        ours_runs.append(run_child(ALIRECON, str(report), str(ledger), str(workdir / "alirecon.parquet"), mem))
    base, base_wall, base_rss = min(base_runs, key=lambda r: r[1])
    ours, ours_wall, ours_rss = min(ours_runs, key=lambda r: r[1])
    ok = all(ours["files_ok"]) and ours["ledger_ok"]
    agree = {k: (base["counts"].get(k, 0), ours["counts"].get(k, 0))
             for k in ("missing_in_report", "missing_in_ledger", "amount_mismatch", "currency_mismatch",
                       "duplicate_in_report")}
    valid = ok and all(a == b for a, b in agree.values())
    return {"rows": n, "gb": round(size, 2), "baseline_s": round(base_wall, 2), "alirecon_s": round(ours_wall, 2),
            "ratio": round(ours_wall / base_wall, 2), "baseline_rss_gib": round(base_rss, 2),
            "alirecon_rss_gib": round(ours_rss, 2),
            "alirecon_stages_s": {k: round(v, 2) for k, v in ours["seconds"].items()},
            "class_counts_baseline_vs_alirecon": agree, "valid": valid}


def main() -> None:
    args = rows_arguments(__doc__, HERE / "out")
    print_machine()
    for n in args.rows or [1_000_000]:
        r = bench(n, args.workdir, args.memory_limit, args.repeat)
        print(json.dumps(r, indent=2))
        print(f"N={n:,}: baseline {r['baseline_s']} s ({r['baseline_rss_gib']} GiB), alirecon {r['alirecon_s']} s "
              f"({r['alirecon_rss_gib']} GiB), ratio {r['ratio']}x, {'valid' if r['valid'] else 'INVALID'}")


if __name__ == "__main__":
    main()
