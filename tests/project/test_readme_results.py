"""Every number the README's results quote comes from a committed command over committed files.

- ``<!-- report: PATH -->`` ... ``<!-- /report -->``: the table rows must appear verbatim, in
  the same order, in the committed file at PATH (a report.md, claims.md);
- ``<!-- command: python scripts/X.py ARGS -->`` ... ``<!-- /command -->``: the table rows must
  be exactly what that command prints today (it is rerun here);
- each committed output in GENERATED must be byte for byte what its command writes today;
- every decimal number in the text of the README's Evidence section must be one that those
  outputs print (the same digits; "−" and "-" alike, a leading "+" ignored), or one of the few
  quoted from the paper or the protocol (ALLOWED).
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

ROOT = REPO
BLOCK = re.compile(r"<!-- report: (\S+) -->[ \t]*\r?\n(.*?)<!-- /report -->", re.S)
COMMAND = re.compile(r"<!-- command: (.+?) -->[ \t]*\r?\n(.*?)<!-- /command -->", re.S)
GPU = "docs/results/gpu-h200-long-sequence-15"
GENERATED = {  # committed output -> the committed command that writes it (docs/results/*/README.md)
    "docs/results/evidence/claims.md":
        "python scripts/paper_claims.py docs/results/evidence docs/results/evidence-ablations",
    "docs/results/evidence/numbers.md":
        "python scripts/evidence_numbers.py docs/results/evidence docs/results/evidence-ablations "
        "docs/results/evidence-replay-before-fix",
    f"{GPU}/table.md": "python scripts/runs_table.py " + " ".join(
        f"{GPU}/{m}" for m in ("seqlora", "kiflora", "kif", "weight-ensemble", "inclora", "olora", "mtl")),
}
# the outputs whose numbers the Evidence section's text may quote
SOURCES = ("docs/results/evidence/report/report.md", *GENERATED)
# numbers the text quotes from elsewhere: the paper's Table V (72.3 vs 63.3 AP) and the
# protocol's scale (one test example of 200 = 0.5 point)
ALLOWED = {"72.3", "63.3", "0.5"}
DECIMAL = re.compile(r"(?<![\d.])[-\u2212+]?\d+\.\d+")


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


# ---- commands -----------------------------------------------------------------------------------

def run_command(command: str) -> str:
    """stdout of a committed ``python scripts/NAME.py ARGS`` command, run from the repository."""
    args = shlex.split(command)
    assert args[0] == "python" and args[1].startswith("scripts/"), f"not a committed script: {command}"
    out = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{command}: exit {out.returncode}: {out.stderr.strip()[-500:]}"
    return out.stdout


def table_rows(text: str) -> list[str]:
    return [ln.rstrip("\r") for ln in text.splitlines() if ln.startswith("|")]


def test_readme_command_blocks_are_what_their_commands_print():
    blocks = COMMAND.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2  # the quickstart table and the GPU run's
    for command, body in blocks:
        assert table_rows(body) == table_rows(run_command(command)), command


@pytest.mark.parametrize("path", sorted(GENERATED))
def test_committed_outputs_regenerate_byte_for_byte(path):
    assert (ROOT / path).read_text(encoding="utf-8") == run_command(GENERATED[path]), \
        f"{path} is not what `{GENERATED[path]}` gives: rerun it"


def test_the_gpu_runs_own_table_is_the_commands():
    measured = (ROOT / GPU / "MEASURED.md").read_text(encoding="utf-8")
    assert table_rows(measured) == table_rows((ROOT / GPU / "table.md").read_text(encoding="utf-8"))


# ---- the numbers in the Evidence section's text -------------------------------------------------

def _norm(token: str) -> str:
    return token.replace("\u2212", "-").lstrip("+")


def numbers(text: str) -> set[str]:
    return {_norm(t) for t in DECIMAL.findall(text)}


def evidence_text(readme: str) -> str:
    """The README's Evidence section without its quoted tables (those are checked above)."""
    start = readme.index("## Evidence")
    end = readme.index("\n## ", start + 1)
    return COMMAND.sub("", BLOCK.sub("", readme[start:end]))


def unsourced(text: str, sources: list[str]) -> list[str]:
    known = set().union(*(numbers(s) for s in sources)) | ALLOWED
    return sorted(n for n in numbers(text) if n not in known)


def test_every_decimal_in_the_evidence_text_comes_from_a_committed_output():
    sources = [(ROOT / p).read_text(encoding="utf-8") for p in SOURCES]
    assert unsourced(evidence_text((ROOT / "README.md").read_text(encoding="utf-8")), sources) == []


def test_an_unsourced_number_is_caught():
    assert numbers("BWT −2.3 [−7.6, +3.0], 65.2-76.2, p 0.428, eq. 14") == {"-2.3", "-7.6", "3.0", "65.2", "76.2", "0.428"}
    src = ["| x | -2.3 [-7.6, +3.0] | 65.2 - 76.2 | 0.428 |"]
    assert unsourced("−2.3 [−7.6, +3.0], 65.2-76.2, 0.428", src) == []
    assert unsourced("−2.4 and 65.2-76.3", src) == ["-2.4", "76.3"]
    assert unsourced("2.3", src) == ["2.3"]  # the sign counts
    text = "## Evidence\nsee 1.5\n<!-- command: python x -->\n| 9.9 |\n<!-- /command -->\n## Next\n7.7\n"
    assert numbers(evidence_text(text)) == {"1.5"}
