"""The one table renderer of every command that prints a table to the terminal
(`gcs-ha status`, the `gcs-ha bench` reports, the drill summary).

    print(render_table([("r0", "leader", 3)], header=("ID", "ROLE", "TERM"), left=2))

Plain text, the same on a terminal and in a pipe: columns two spaces apart, widths in
terminal cells, no trailing spaces, colour or control characters, so `line.split()` gives
the cells back. `None` is "-", a line break in a cell a space, short rows are padded.
Nothing here raises on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.cells import cell_len

GAP = "  "
MISSING = "-"


def cell_text(value: object) -> str:
    """What a value looks like in a cell: "-" for None, one line of str(value) otherwise."""
    if value is None:
        return MISSING
    return " ".join(str(value).splitlines())


def render_table(
    rows: Iterable[Sequence[object]],
    *,
    header: Sequence[object] = (),
    left: int | None = None,
    rule: bool = False,
) -> str:
    """The rows (and the header first, when given) as aligned columns.

    `left`: how many leading columns are left-aligned, the others right-aligned (numbers);
    None: every column left-aligned. `rule`: a line of dashes under the header.
    An empty table (no header, no rows) is the empty string."""
    lines = [[cell_text(v) for v in row] for row in ([header] if header else []) + list(rows)]
    if not lines:
        return ""
    columns = max(map(len, lines))
    for line in lines:
        line.extend([""] * (columns - len(line)))
    widths = [max(cell_len(line[c]) for line in lines) for c in range(columns)]
    lefts = columns if left is None else left
    out = [_line(line, widths, lefts) for line in lines]
    if rule and header:
        out.insert(1, GAP.join("-" * w for w in widths))
    return "\n".join(out)


def _line(cells: Sequence[str], widths: Sequence[int], lefts: int) -> str:
    padded = []
    for c, (text, width) in enumerate(zip(cells, widths, strict=True)):
        pad = " " * (width - cell_len(text))
        padded.append(text + pad if c < lefts else pad + text)
    return GAP.join(padded).rstrip()
