"""One row per figure: what was measured, the number, the bar, and whether it was met."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Row:
    figure: str
    measure: str
    value: str
    bar: str = ""
    passed: bool | None = None  # None: a number for context, no bar

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def render(rows: list[Row]) -> str:
    headers = ("#", "Measure", "Result", "Bar", "")
    cells = [headers] + [(r.figure, r.measure, r.value, r.bar, r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        padded = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(padded).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)
