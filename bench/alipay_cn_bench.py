"""Benchmark: parse an N-row Alipay China 业务明细 (GBK) through alirecon vs a bare DuckDB read of the same data.

Measures, in separate child processes (so each has its own page cache warm-up, wall time and peak RSS):
  alirecon  = ``registry.parse_file`` of the GBK bill: detection, sha256, GB18030 decoding, the '#' frame and
              footers, every validation rule of the 25 columns, canonical lines in DuckDB. Twice: with the
              default options (``keep_extras``: the 17 texts without a canonical field kept per line, what the
              workspace stores) and lean (``keep_extras=False``, what the one-shot reconcile uses);
  bare      = DuckDB ``read_csv`` of the same bill pre-converted to UTF-8 (the same text, TABs included),
              '#' lines skipped as comments, types sniffed, materialised into a table.
Each side runs ``--repeat`` times (alternating) and its best wall time is reported with rows/s and the ratio, and
for alirecon where the time went: GBK decoding (``alipay_cn._decode_to``), the DuckDB pass over the decoded
copy (``read_csv_body``: every rule, the canonical lines) and the rest (start, imports, frame).

    python bench/alipay_cn_bench.py --rows 1000000

The bill is written once (seed-free, deterministic) by ``alipay_cn.write_report`` with plain python values
(constant zero amounts passed as text, which the writer writes as given) and kept in ``--workdir``.
Not a timed test: it prints figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from _child import print_machine, rows_arguments, run_child  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
ACCOUNT = "20887217759422330156"

GENERATE = r"""
import sys
from datetime import datetime, timedelta
from pathlib import Path
from alirecon.clock import UTC8
from alirecon.formats import alipay_cn as cn
n, gbk, utf8 = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
start = datetime(2026, 9, 3, tzinfo=UTC8)
Z = "0.00"
def rows():
    for i in range(n):
        at = start + timedelta(seconds=(i * 86399) // max(n, 1))
        refund = i % 50 == 49
        amount = 100 + (i * 7919) % 100000
        fee = amount * 6 // 1000
        yield {"支付宝交易号": f"2026090322001{i:015d}", "商户订单号": f"ORD{i:012d}",
               "业务类型": "退款" if refund else "交易", "商品名称": "测试商品", "创建时间": at, "完成时间": at,
               "门店编号": f"S{i % 20:03d}", "门店名称": "一号店", "操作员": "op1", "终端号": None,
               "对方账户": "**博(156******89)", "订单金额（元）": -amount if refund else amount,
               "商家实收（元）": -amount if refund else amount, "支付宝红包（元）": Z, "集分宝（元）": Z,
               "支付宝优惠（元）": Z, "商家优惠（元）": Z, "券核销金额（元）": Z,
               "券名称": None, "商家红包消费金额（元）": Z, "卡消费金额（元）": Z,
               "退款批次号/请求号": f"R{i:012d}" if refund else None, "服务费（元）": fee if refund else -fee,
               "分润（元）": Z, "备注": None}
data = cn.write_report("trade_detail", rows(), account=sys.argv[4], period="2026-09-03",
                       exported_at=start + timedelta(days=1, hours=6))
gbk.write_bytes(data)
utf8.write_bytes(data.decode("gb18030").encode("utf-8"))
print("{}")
"""

BARE = r"""
import duckdb, json, sys, time
path, mem = sys.argv[1:3]
t0 = time.perf_counter()
con = duckdb.connect()
con.execute(f"SET memory_limit='{mem}'")
con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{path}', header=true, comment='#')")
rows = con.execute("SELECT count(*) FROM t").fetchall()[0][0]
print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows}))
"""

ALIRECON = r"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from alirecon.formats import alipay_cn, registry
from alirecon.formats.engine import ParseOptions, new_connection
path, mem, keep = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
stages = {}
def timed(name, fn):  # where the time goes: the GBK decoding and the DuckDB pass over its UTF-8 copy
    def run(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            stages[name] = round(time.perf_counter() - t, 3)
    return run
alipay_cn._decode_to = timed("decode", alipay_cn._decode_to)
alipay_cn.read_csv_body = timed("duckdb", alipay_cn.read_csv_body)
con = new_connection(memory_limit=mem)
t1 = time.perf_counter()
parsed = registry.parse_file(path, con=con, options=ParseOptions(keep_extras=keep))
t2 = time.perf_counter()
print(json.dumps({"seconds": t2 - t0, "parse": t2 - t1, "stages": stages, "rows": parsed.row_count,
                  "ok": parsed.ok, "report": parsed.report, "problems": [str(p) for p in parsed.problems[:3]]}))
"""


def bench(n: int, workdir: Path, mem: str, repeat: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    gbk = workdir / f"{ACCOUNT}_20260903_业务明细_{n}.csv"
    utf8 = workdir / f"trade_detail_utf8_{n}.csv"
    if not gbk.exists() or not utf8.exists():
        print(f"writing {n:,} rows with alipay_cn.write_report ...", flush=True)
        run_child(GENERATE, str(n), str(gbk), str(utf8), ACCOUNT)
    runs: dict[str, list[tuple[dict, float, float]]] = {"bare": [], "alirecon": [], "alirecon_lean": []}
    for _ in range(repeat):
        runs["bare"].append(run_child(BARE, str(utf8), mem))
        runs["alirecon"].append(run_child(ALIRECON, str(gbk), mem, "1"))
        runs["alirecon_lean"].append(run_child(ALIRECON, str(gbk), mem, "0"))
    best = {k: min(v, key=lambda r: r[1]) for k, v in runs.items()}
    out: dict = {"rows": n, "gbk_mb": round(gbk.stat().st_size / 1e6, 1)}
    base_wall = best["bare"][1]
    for k, (res, wall, rss) in best.items():
        out[k] = {"wall_s": round(wall, 2), "rows_per_s": round(n / wall), "peak_rss_gib": round(rss, 2),
                  "ratio_to_bare": round(wall / base_wall, 2), "rows_read": res["rows"]}
        if k != "bare":
            out[k] |= {"parse_s": round(res["parse"], 2), "stages_s": res["stages"], "ok": res["ok"],
                       "report": res["report"],
                       # the DuckDB pass alone against the whole bare read: what is left without decoding
                       "duckdb_pass_ratio": round(res["stages"]["duckdb"] / base_wall, 2)}
    out["valid"] = all(best[k][0]["rows"] == n for k in best) and best["alirecon"][0]["ok"]
    return out


def main() -> None:
    args = rows_arguments(__doc__, HERE / "out")
    print_machine()
    for n in args.rows or [1_000_000]:
        r = bench(n, args.workdir, args.memory_limit, args.repeat)
        print(json.dumps(r, indent=2, ensure_ascii=False))
        print(f"N={n:,} ({r['gbk_mb']} MB GBK): bare DuckDB {r['bare']['wall_s']} s "
              f"({r['bare']['rows_per_s']:,} rows/s); alirecon {r['alirecon']['wall_s']} s "
              f"({r['alirecon']['rows_per_s']:,} rows/s, {r['alirecon']['ratio_to_bare']}x); lean "
              f"{r['alirecon_lean']['wall_s']} s ({r['alirecon_lean']['rows_per_s']:,} rows/s, "
              f"{r['alirecon_lean']['ratio_to_bare']}x); {'valid' if r['valid'] else 'INVALID'}")
        for k in ("alirecon", "alirecon_lean"):
            st = r[k]["stages_s"]
            rest = round(r[k]["wall_s"] - st["decode"] - st["duckdb"], 2)
            print(f"  {k}: GBK decoding {st['decode']} s, DuckDB pass {st['duckdb']} s "
                  f"({r[k]['duckdb_pass_ratio']}x the whole bare read), the rest {rest} s "
                  "(Python start, imports, sha256 wait, frame)")


if __name__ == "__main__":
    main()
