"""The README's figure tables are what the committed JSON under docs/results/ gives."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.results_table import refresh

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_every_generated_table_matches_its_committed_json() -> None:
    blocks = re.findall(r"<!-- generated: (.*?) -->", README)
    assert any(" drill " in b for b in blocks), "the drill table is generated"
    assert refresh(README) == README, ("a README table differs from its JSON; rerun "
                                       "python benchmarks/results_table.py readme README.md")


def test_an_edited_figure_is_caught() -> None:
    start = README.index("<!-- generated: python benchmarks/results_table.py drill")
    row = README.index("\n| ", README.index("|---|", start)) + 1
    end = README.index("\n", row)
    cells = README[row:end].split(" | ")
    cells[2] = "1"  # the first row's request count
    edited = README[:row] + " | ".join(cells) + README[end:]
    assert edited != README
    assert refresh(edited) == README
