"""Plain-text tables for the command line: left-aligned columns, two spaces apart."""

from __future__ import annotations


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows])
    return "\n".join(line.rstrip() for line in lines)
