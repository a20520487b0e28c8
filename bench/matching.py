"""Precision / recall of tracker.matching on the hand-labelled title pairs.

    python bench/matching.py [tests/data/title-pairs.csv] [--threshold 0.75] [--quiet]

Prints every misclassified pair with the matcher's reason, then precision, recall and F1.
`evaluate()` is imported by tests/test_matching.py.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tracker.matching import DEFAULT_THRESHOLD, ProductRef, match  # noqa: E402

DEFAULT_CSV = ROOT / "tests" / "data" / "title-pairs.csv"


def _ref(row: dict[str, str], side: str) -> ProductRef:
    def get(name: str) -> str | None:
        return (row.get(f"{side}_{name}") or "").strip() or None
    return ProductRef(title=row[f"{side}_title"], gtin=get("gtin"), sku=get("sku"), mpn=get("mpn"),
                      brand=get("brand"))


def load_pairs(path: Path | str = DEFAULT_CSV) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def evaluate(path: Path | str = DEFAULT_CSV, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Any]:
    rows = load_pairs(path)
    tp = fp = fn = tn = 0
    errors: list[tuple[str, dict[str, str], Any]] = []
    methods: dict[str, int] = {}
    for row in rows:
        expected = row["expected_match"].strip() in ("1", "true", "yes")
        res = match(_ref(row, "a"), _ref(row, "b"), threshold=threshold)
        methods[res.method] = methods.get(res.method, 0) + 1
        if res.is_match and expected:
            tp += 1
        elif res.is_match:
            fp += 1
            errors.append(("FP", row, res))
        elif expected:
            fn += 1
            errors.append(("FN", row, res))
        else:
            tn += 1
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"pairs": len(rows), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision,
            "recall": recall, "f1": f1, "errors": errors, "methods": methods, "threshold": threshold}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default=str(DEFAULT_CSV))
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--quiet", action="store_true", help="only the summary")
    args = ap.parse_args(argv)
    r = evaluate(args.csv, args.threshold)
    if not args.quiet:
        for kind, row, res in r["errors"]:
            print(f"{kind}  conf={res.confidence:.2f} [{res.method}] {row['a_title']!r} | {row['b_title']!r}")
            print(f"     {res.reason}")
    positives = r["tp"] + r["fn"]
    print(f"pairs={r['pairs']} (match={positives}, non-match={r['pairs'] - positives}) "
          f"threshold={r['threshold']:.2f}")
    print(f"TP={r['tp']} FP={r['fp']} FN={r['fn']} TN={r['tn']}")
    print("decided by: " + ", ".join(f"{k}={v}" for k, v in sorted(r["methods"].items())))
    print(f"precision={r['precision']:.3f} recall={r['recall']:.3f} F1={r['f1']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
