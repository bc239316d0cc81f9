"""gcs_ha.table: the one renderer of the terminal tables (status, bench, drill)."""

from __future__ import annotations

from gcs_ha.table import render_table


def test_columns_are_aligned_left_then_right() -> None:
    text = render_table(
        [("r0", "leader", 3, 1200), ("r12", "follower", 17, 5)],
        header=("ID", "ROLE", "TERM", "COMMIT"),
        left=2,
    )
    assert text.splitlines() == [
        "ID   ROLE      TERM  COMMIT",
        "r0   leader       3    1200",
        "r12  follower    17       5",
    ]


def test_every_column_left_aligned_by_default_and_no_trailing_spaces() -> None:
    text = render_table([("a", "long value", ""), ("bbb", "x", "")], header=("K", "V", "LAST"))
    assert text.splitlines() == ["K    V           LAST", "a    long value", "bbb  x"]
    assert all(line == line.rstrip() for line in text.splitlines())


def test_none_is_a_dash_and_a_line_break_a_space() -> None:
    text = render_table([(None, "two\nlines", 1.5)], left=0)
    assert text == "-  two lines  1.5"


def test_a_wide_cell_widens_its_column_only() -> None:
    rows = [("r0", "x" * 40, "1"), ("r1", "y", "22")]
    lines = render_table(rows, header=("ID", "NOTE", "N"), left=2).splitlines()
    assert [len(line) for line in lines] == [48, 48, 48]
    assert lines[2] == "r1  y" + " " * 39 + "  22"


def test_wide_characters_count_two_terminal_cells() -> None:
    lines = render_table([("漢字", "1"), ("ab", "22")], header=("NAME", "N"), left=1).splitlines()
    # 漢字 takes four cells on a terminal: the second column starts at the same place
    assert lines == ["NAME   N", "漢字   1", "ab    22"]


def test_a_rule_under_the_header() -> None:
    text = render_table([("get", 7)], header=("kind", "total"), left=1, rule=True)
    assert text.splitlines() == ["kind  total", "----  -----", "get       7"]


def test_short_rows_are_padded() -> None:
    assert render_table([("a", "b", "c"), ("d",)]).splitlines() == ["a  b  c", "d"]


def test_empty_tables() -> None:
    assert render_table([]) == ""
    assert render_table([], header=("ID", "ROLE")) == "ID  ROLE"
    assert render_table([], header=("ID", "ROLE"), rule=True) == "ID  ROLE\n--  ----"
    assert render_table([()]) == ""
