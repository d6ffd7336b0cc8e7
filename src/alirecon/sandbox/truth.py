"""Compare what alirecon found with what the world's truth file says it must find.

Why: the demo and the tests judge alirecon the same way: every injected discrepancy found, nothing
else reported. Results are compared as plain rows, so this needs nothing from the recon layer.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["TruthDiff", "compare", "load_truth"]

EXCEPTION_KEY = ("family", "report", "exception_class", "reason_code", "match_key", "record_type")
CHECK_KEY = ("check_id", "reason_code", "scope")


def load_truth(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return data


@dataclass
class TruthDiff:
    expected_exceptions: int = 0
    expected_check_failures: int = 0
    missed: list[dict[str, Any]] = field(default_factory=list)  # in the truth, not found
    unexpected: list[dict[str, Any]] = field(default_factory=list)  # found, not in the truth

    @property
    def exact(self) -> bool:
        return not self.missed and not self.unexpected

    def to_dict(self) -> dict[str, Any]:
        return {"exact": self.exact, "expected_exceptions": self.expected_exceptions,
                "expected_check_failures": self.expected_check_failures, "missed": self.missed,
                "unexpected": self.unexpected}


def _multiset(rows: list[dict[str, Any]], key: tuple[str, ...], kind: str) -> Counter[tuple[Any, ...]]:
    return Counter((kind, *(r.get(k) for k in key)) for r in rows)


def compare(truth: dict[str, Any], exceptions: pa.Table, checks: pa.Table,
            ingest: list[dict[str, Any]] | None = None) -> TruthDiff:
    """Exact comparison (as multisets): exceptions by EXCEPTION_KEY, failed checks by CHECK_KEY, and, when
    ``ingest`` outcomes (dicts with ``path``, ``status``, ``problems``) are given, duplicate deliveries
    and quarantined files."""
    diff = TruthDiff(len(truth["exceptions"]), len(truth["check_failures"]))
    want = _multiset(truth["exceptions"], EXCEPTION_KEY, "exception")
    got = _multiset(exceptions.to_pylist(), EXCEPTION_KEY, "exception")
    failed = [r for r in checks.to_pylist() if r["status"] == "fail"]
    want += _multiset(truth["check_failures"], CHECK_KEY, "check")
    got += _multiset(failed, CHECK_KEY, "check")
    if ingest is not None:
        want += Counter(("duplicate", p) for p in truth["duplicate_deliveries"])
        want += Counter(("quarantined", q["path"], q["code"]) for q in truth["quarantined"])
        for o in ingest:
            if o["status"] == "duplicate":
                got[("duplicate", o["path"])] += 1
            elif o["status"] == "quarantined":
                codes = {p["code"] for p in o["problems"]}
                for q in truth["quarantined"]:
                    if q["path"] == o["path"] and q["code"] in codes:
                        codes = {q["code"]}
                for code in sorted(codes)[:1]:
                    got[("quarantined", o["path"], code)] += 1
    keys = {**{k: EXCEPTION_KEY for k in ("exception",)}, "check": CHECK_KEY, "duplicate": ("path",),
            "quarantined": ("path", "code")}
    for item, n in sorted((want - got).items(), key=str):
        diff.missed.extend([dict(zip(("kind", *keys[item[0]]), item, strict=True))] * n)
    for item, n in sorted((got - want).items(), key=str):
        diff.unexpected.extend([dict(zip(("kind", *keys[item[0]]), item, strict=True))] * n)
    return diff
