"""The Korean notebooks (notebooks/ko/) run exactly the English notebooks' code.

tools/korean_notebooks.py compares each English notebook with its Korean twin: same cells in the
same order, code cells identical character for character (markdown is the translation, never
compared). The first test runs that check on the repository; the others check the tool itself on
small notebooks written to a temporary folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import korean_notebooks  # noqa: E402


def test_every_notebook_has_a_korean_twin_with_identical_code():
    assert korean_notebooks.english_notebooks(), "no notebooks found"
    report = korean_notebooks.check()
    if report:
        pytest.fail("Korean notebooks out of step (python tools/korean_notebooks.py check; "
                    "sync-code NN_name copies changed code):\n"
                    + korean_notebooks.format_report(report), pytrace=False)


def md(text):
    return nbformat.v4.new_markdown_cell(text)


def code(text):
    return nbformat.v4.new_code_cell(text)


def write(root: Path, relative: str, cells) -> Path:
    path = root / "notebooks" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


@pytest.fixture
def project(tmp_path):
    """Two English notebooks; 01 has a Korean twin in step, 02 none."""
    write(tmp_path, "01_a.ipynb", [md("# 01 · A"), code("x = 1"), md("Text."), code("print(x)")])
    write(tmp_path, "02_b.ipynb", [md("# 02 · B"), code("y = 2")])
    write(tmp_path, "ko/01_a.ipynb",
          [md("# 01 · 가"), code("x = 1"), md("본문."), code("print(x)")])
    return tmp_path


def test_check_lists_missing_and_orphan_notebooks(project):
    write(project, "ko/09_old.ipynb", [md("# 09")])
    report = korean_notebooks.check(root=project)
    assert report == {"notebooks/ko/02_b.ipynb": ["missing"],
                      "notebooks/ko/09_old.ipynb": ["no English notebook notebooks/09_old.ipynb"]}
    assert korean_notebooks.missing(report) == ["notebooks/ko/02_b.ipynb"]
    text = korean_notebooks.format_report(report)
    assert text.splitlines()[0] == "missing Korean notebooks (1): notebooks/ko/02_b.ipynb"
    write(project, "ko/02_b.ipynb", [md("# 02 · 나"), code("y = 2")])
    (project / "notebooks" / "ko" / "09_old.ipynb").unlink()
    assert korean_notebooks.check(root=project) == {}


def test_check_reports_a_changed_code_cell_and_sync_code_fixes_it(project):
    write(project, "ko/02_b.ipynb", [md("# 02 · 나"), code("y = 2")])
    write(project, "01_a.ipynb", [md("# 01 · A"), code("x = 1"), md("Text."), code("print(x + 1)")])
    report = korean_notebooks.check(root=project)
    assert report == {"notebooks/ko/01_a.ipynb": [
        "code cell 3 differs at its line 1:\n    English: print(x + 1)\n    Korean:  print(x)"]}

    assert korean_notebooks.sync_code("01_a", root=project) == [3]
    assert korean_notebooks.check(root=project) == {}
    synced = nbformat.read(project / "notebooks" / "ko" / "01_a.ipynb", as_version=4)
    assert [c.source for c in synced.cells] == ["# 01 · 가", "x = 1", "본문.", "print(x + 1)"]
    assert korean_notebooks.sync_code("notebooks/ko/01_a.ipynb", root=project) == []


def test_a_trailing_newline_counts_as_a_difference(project):
    write(project, "ko/02_b.ipynb", [md("# 02 · 나"), code("y = 2\n")])
    problems = korean_notebooks.check(root=project)["notebooks/ko/02_b.ipynb"]
    assert len(problems) == 1 and problems[0].startswith("code cell 1 differs")


def test_check_and_sync_code_report_where_the_structure_differs(project):
    write(project, "ko/02_b.ipynb", [md("# 02 · 나"), code("y = 2")])
    # the English notebook gained a markdown cell and a code cell the Korean one lacks
    write(project, "01_a.ipynb", [md("# 01 · A"), code("x = 1"), md("Text."), md("More."),
                                  code("print(x)"), code("z = 3")])
    before = (project / "notebooks" / "ko" / "01_a.ipynb").read_text()
    problems = korean_notebooks.check(root=project)["notebooks/ko/01_a.ipynb"]
    assert problems[0] == "6 cells in English, 4 in Korean; cell types differ:"
    assert "  English cell 3 (markdown: 'More.'): no counterpart in Korean" in problems
    assert "  English cell 5 (code: 'z = 3'): no counterpart in Korean" in problems

    with pytest.raises(ValueError, match="cell structure differs") as error:
        korean_notebooks.sync_code("01_a", root=project)
    assert "English cell 5 (code: 'z = 3'): no counterpart in Korean" in str(error.value)
    assert (project / "notebooks" / "ko" / "01_a.ipynb").read_text() == before  # untouched


def test_sync_code_refuses_a_missing_twin(project):
    with pytest.raises(ValueError, match="no Korean notebook notebooks/ko/02_b.ipynb"):
        korean_notebooks.sync_code("02_b", root=project)
