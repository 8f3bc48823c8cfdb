"""Plain-text table writers shared by the report's tables: Markdown and CSV cells."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; a cell's own ``|`` (ours | paper) is escaped, not a column break."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]
    return "\n".join(lines) + "\n"


def to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()
