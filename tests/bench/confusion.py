#!/usr/bin/env python3
"""The experiment catalogue's confusion matrix: for every call of every experiment (pressure and
probe), the verdict the catalogue expects against the verdict the engine measured.

Usage: holdup experiment --quick --json > run.json; tests/bench/confusion.py run.json [more.json]
With HOLDUP_LAB_STAGES=off on the experiment, it shows what measurement alone recovers (the
engine sees none of the Lab's own stage spans). Several files add up.
"""
import json
import sys
from collections import Counter, defaultdict


def main(paths: list[str]) -> None:
    matrix: dict[str, Counter] = defaultdict(Counter)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
        for finding in report["findings"]:
            for role, expected in (("pressure", finding["pressure_expected"]), ("probe", finding["probe_expected"])):
                split = finding[role].get("split") or {}
                for verdict, n in (split.get("verdicts") or {}).items():
                    matrix[expected][verdict] += n
    measured = sorted({v for row in matrix.values() for v in row})
    print("| expected \\ measured | " + " | ".join(measured) + " | right |")
    print("|---|" + "---|" * (len(measured) + 1))
    right = total = 0
    for expected in sorted(matrix):
        row = matrix[expected]
        n = sum(row.values())
        ok = row[expected] if expected != "none" else row["none"]
        right += ok
        total += n
        cells = " | ".join(str(row[v]) if row[v] else "" for v in measured)
        print(f"| {expected} | {cells} | {ok / n * 100:.0f}% of {n} |")
    print(f"\nall calls: {right / max(total, 1) * 100:.1f}% of {total} as expected")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
