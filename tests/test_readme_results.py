"""The README's result tables are copies of committed reports: every table row between a
``<!-- report: PATH -->`` marker and the next ``<!-- /report -->`` must appear verbatim in
the report.md at PATH (relative to the repository), so a README number cannot drift from
the committed results it quotes."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"<!-- report: (\S+) -->\n(.*?)<!-- /report -->", re.S)


def quoted_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(report path, table rows) for every marked block of ``text``."""
    return [(path, [ln for ln in body.splitlines() if ln.startswith("|")]) for path, body in BLOCK.findall(text)]


def missing_rows(text: str, root: Path) -> list[str]:
    """Rows of marked blocks that their report does not contain (or 'PATH: no report')."""
    out = []
    for path, rows in quoted_blocks(text):
        report = root / path
        if not report.is_file():
            out.append(f"{path}: no report")
            continue
        lines = set(report.read_text(encoding="utf-8").splitlines())
        out += [f"{path}: {row}" for row in rows if row not in lines]
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
