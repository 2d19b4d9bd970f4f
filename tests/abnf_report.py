"""Per-rule tallies of the OASIS ABNF test cases, printed by `tests/conftest.py` after a run.

Filled in by `tests/test_abnf_testcases.py`; holds no logic beyond counting and formatting.
"""

from __future__ import annotations

from collections import defaultdict

OUTCOMES = ("passed", "failed", "skipped", "501")

# rule -> outcome -> count; "501" counts positive cases accepted as NotImplementedFeature (they
# are also counted as passed).
COUNTS: defaultdict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))


def record(rule: str, outcome: str) -> None:
    COUNTS[rule][outcome] += 1


def summary_lines() -> list[str]:
    if not COUNTS:
        return []
    lines = [f"{'rule':<26} {'passed':>6} {'failed':>6} {'skipped':>7}  (501 among passed)"]
    totals = dict.fromkeys(OUTCOMES, 0)
    for rule in sorted(COUNTS, key=str.lower):
        c = COUNTS[rule]
        for key in OUTCOMES:
            totals[key] += c[key]
        lines.append(
            f"{rule:<26} {c['passed']:>6} {c['failed']:>6} {c['skipped']:>7}  ({c['501']})"
        )
    t = totals
    lines.append(f"{'total':<26} {t['passed']:>6} {t['failed']:>6} {t['skipped']:>7}  ({t['501']})")
    return lines
