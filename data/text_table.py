"""Plain-text tables for the terminal: each column as wide as its widest cell, so no name is cut.

    print(aligned_table(["module", "pairs"], [["reflection", "25"], ["memory", "25"]]))
"""

from collections.abc import Sequence


def aligned_table(header: Sequence[str], rows: Sequence[Sequence[str]], left_columns: int = 1) -> str:
    """The first `left_columns` columns (names) align left, the rest (numbers) right; two spaces between."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(w) if i < left_columns else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
