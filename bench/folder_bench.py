"""Benchmark: importing a folder of N small hand-downloaded reports (`alirecon fetch --folder`), first and again.

Per file, the fixed costs dominate (detection, archiving, the manifest, planning the validation query, loading
the lines), so this measures them against a bare DuckDB baseline in the same process: each file read by its own
``read_csv`` statement into a table (what any per-file loader pays at least).

    python bench/folder_bench.py --files 200

Files: Antom settlement details of 3 rows each, written by ``antom.write_report``. Prints seconds per file
for the first import (with ingest), a re-import of the unchanged folder, and the baseline. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from alirecon.formats import antom
from alirecon.sources.folder import import_folder
from alirecon.warehouse import Workspace

HERE = Path(__file__).resolve().parent
UTC8 = timezone(timedelta(hours=8))


def write_folder(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for b in range(n):
        batch = f"20181226110210{b:05d}"
        rows = [{"settlementBatchId": batch, "customerId": "1022188000000000001", "transactionId": f"T{b}-{i}",
                 "transactionRequestId": f"R{b}-{i}", "transactionType": "PAYMENT", "paymentMethodType": "KAKAOPAY",
                 "pspName": "KaKaoPay", "paymentTime": datetime(2018, 12, 25, 10, tzinfo=UTC8),
                 "settlementTime": datetime(2018, 12, 26, 10, tzinfo=UTC8), "productCode": "AGREEMENT_PAYMENT",
                 "transactionAmountValue": 18000, "transactionCurrency": "KRW", "settlementAmountValue": 1450,
                 "settlementCurrency": "USD", "feeAmountValue": -50, "feeCurrency": "USD"} for i in range(3)]
        path = folder / antom.file_name("settlement_detail", currency="USD", batch_id=batch)
        path.write_bytes(antom.write_report("settlement_detail", rows))
        out.append(path)
    return out


def bare(files: list[Path]) -> float:
    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute("CREATE TABLE t (line VARCHAR)")
    for f in files:
        con.execute(f"INSERT INTO t SELECT * FROM read_csv('{f}', header=false, columns={{'line': 'VARCHAR'}}, "
                    "delim='\\x01', quote='')")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=200)
    ap.add_argument("--workdir", type=Path, default=HERE / "out" / "folder")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    files = write_folder(args.workdir / "downloads", args.files)
    baseline = bare(files)
    with Workspace.init(args.workdir / "ws") as ws:
        t0 = time.perf_counter()
        first = import_folder(ws, args.workdir / "downloads", account="bench")
        t1 = time.perf_counter()
        again = import_folder(ws, args.workdir / "downloads", account="bench")
        t2 = time.perf_counter()
    n = args.files
    assert first.new == n and again.skipped == n and first.ingest is not None and first.ingest.count("new") == n
    result = {"files": n, "first_import_s_per_file": round((t1 - t0) / n, 4),
              "reimport_s_per_file": round((t2 - t1) / n, 5), "bare_read_csv_s_per_file": round(baseline / n, 4),
              "first_import_ratio_to_bare": round((t1 - t0) / baseline, 1)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
