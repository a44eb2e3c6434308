"""The README's result tables are copies of committed reports: the table rows between a
``<!-- report: PATH -->`` marker and the next ``<!-- /report -->`` must appear verbatim, in
the same order, in the report.md at PATH (relative to the repository), so a README number
cannot drift from the committed results it quotes."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- report: (\S+) -->[ \t]*\r?\n(.*?)<!-- /report -->", re.S)


def quoted_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(report path, table rows) for every marked block of ``text``."""
    return [(path, [ln for ln in body.splitlines() if ln.startswith("|")]) for path, body in BLOCK.findall(text)]


def missing_rows(text: str, root: Path) -> list[str]:
    """What is wrong with the marked blocks: a marker without a block, a block without a table
    row, a missing report ('PATH: no report'), rows the report lacks or has in another order."""
    blocks = quoted_blocks(text)
    out = [] if text.count("<!-- report:") == len(blocks) else ["a '<!-- report:' marker without its block"]
    for path, rows in blocks:
        report = root / path
        if not rows:
            out.append(f"{path}: no table row quoted")
        if not report.is_file():
            out.append(f"{path}: no report")
            continue
        lines = [ln.rstrip("\r") for ln in report.read_text(encoding="utf-8").splitlines()]
        at = -1
        for row in rows:
            later = [i for i, ln in enumerate(lines) if ln == row and i > at]
            if not later:
                out.append(f"{path}: {row}" if row not in lines else f"{path}: out of order: {row}")
                continue
            at = later[0]
    return out


def test_readme_tables_equal_their_reports():
    assert missing_rows((ROOT / "README.md").read_text(encoding="utf-8"), ROOT) == []


def test_a_changed_number_is_caught(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.md").write_text("# r\n\n| a | b |\n|---|---|\n| x | 1.00 |\n", encoding="utf-8")
    good = "text\n<!-- report: r/report.md -->\n| a | b |\n|---|---|\n| x | 1.00 |\n<!-- /report -->\n"
    assert quoted_blocks(good) == [("r/report.md", ["| a | b |", "|---|---|", "| x | 1.00 |"])]
    assert missing_rows(good, tmp_path) == []
    assert missing_rows(good.replace("1.00", "1.01"), tmp_path) == ["r/report.md: | x | 1.01 |"]
    assert missing_rows(good.replace("r/report.md", "s/report.md"), tmp_path) == ["s/report.md: no report"]
    swapped = good.replace("| a | b |\n|---|---|\n", "|---|---|\n| a | b |\n")
    assert missing_rows(swapped, tmp_path) == ["r/report.md: out of order: | a | b |"]
    empty = "<!-- report: r/report.md -->\nno table\n<!-- /report -->\n"
    assert missing_rows(empty, tmp_path) == ["r/report.md: no table row quoted"]
    assert missing_rows("<!-- report: r/report.md --> oops\n| x | 1.00 |\n", tmp_path) == [
        "a '<!-- report:' marker without its block"]
