"""Keep the Korean notebooks (notebooks/ko/) in step with the English ones (notebooks/).

    python tools/korean_notebooks.py check                    # exit 1, listing every difference
    python tools/korean_notebooks.py sync-code 03_training_mnist

Each English notebook ``notebooks/NN_name.ipynb`` has a Korean twin ``notebooks/ko/NN_name.ipynb``:
its own notebook, with the same cells in the same order, markdown cells in Korean and code cells
identical to the English ones, character for character (so both editions run the same code and
print the same English output).

``check`` reports, for every English notebook: a missing twin; a different number of cells or a
different sequence of cell types (with the cells that have no counterpart); a code cell whose
source differs (with its first differing line). It also reports Korean notebooks that have no
English original. Markdown is never compared.

``sync-code NN_name`` copies the English code cells' sources into the Korean twin in place and
keeps its markdown (and its outputs, which are then stale: re-run the notebook). It refuses, and
changes nothing, when the two do not have the same cell types in the same order: add or remove
the Korean markdown cells by hand first (the message says where).

To start a new Korean notebook, copy the English one into notebooks/ko/ and translate its
markdown cells; ``tools/sync_notebooks.py`` then points its Colab badge at notebooks/ko/.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
KOREAN = "ko"


def english_notebooks(root: Path = ROOT) -> list[Path]:
    """The English notebooks: notebooks/*.ipynb (not subfolders)."""
    return sorted((root / "notebooks").glob("*.ipynb"))


def korean_twin(english: Path) -> Path:
    """notebooks/ko/<same name> for notebooks/<name>."""
    return english.parent / KOREAN / english.name


def _english_path(name: str, root: Path) -> Path:
    """``01_vae_theory``, ``01_vae_theory.ipynb`` or a path to either edition -> English path."""
    stem = Path(name).name.removesuffix(".ipynb")
    return root / "notebooks" / f"{stem}.ipynb"


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _first_line(source: str) -> str:
    line = next((s for s in source.splitlines() if s.strip()), "")
    return line if len(line) <= 70 else line[:67] + "..."


def _key(cell) -> tuple[str, str | None]:
    """What must match between the editions: the type, and for code cells the source."""
    return (cell.cell_type, cell.source if cell.cell_type == "code" else None)


def _structure_problems(en_cells, ko_cells) -> list[str]:
    """Where the sequences of cell types differ, cell by cell (empty when they agree).

    Cells are aligned on type and, for code cells, source (identical code is the anchor), so an
    inserted or deleted cell is reported as that, not as every later cell differing.
    """
    if [c.cell_type for c in en_cells] == [c.cell_type for c in ko_cells]:
        return []
    lines = [f"{len(en_cells)} cells in English, {len(ko_cells)} in Korean; cell types differ:"]
    matcher = difflib.SequenceMatcher(a=[_key(c) for c in en_cells],
                                      b=[_key(c) for c in ko_cells], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        en = [f"English cell {i} ({en_cells[i].cell_type}: {_first_line(en_cells[i].source)!r})"
              for i in range(i1, i2)]
        ko = [f"Korean cell {j} ({ko_cells[j].cell_type}: {_first_line(ko_cells[j].source)!r})"
              for j in range(j1, j2)]
        types_en = [en_cells[i].cell_type for i in range(i1, i2)]
        types_ko = [ko_cells[j].cell_type for j in range(j1, j2)]
        if tag == "replace" and types_en == types_ko:
            continue  # same types, code differs: reported by the code comparison
        if tag == "delete":
            lines += [f"  {e}: no counterpart in Korean" for e in en]
        elif tag == "insert":
            lines += [f"  {k}: no counterpart in English" for k in ko]
        else:
            lines += [f"  {e}" for e in en] + [f"    vs {k}" for k in ko]
    return lines


def _code_problems(en_cells, ko_cells) -> list[str]:
    """Code cells (same positions) whose sources differ, with the first differing line."""
    lines = []
    for i, (en, ko) in enumerate(zip(en_cells, ko_cells, strict=True)):
        if en.cell_type != "code" or en.source == ko.source:
            continue
        en_lines, ko_lines = en.source.splitlines(), ko.source.splitlines()
        n = next((n for n, (a, b) in enumerate(zip(en_lines, ko_lines)) if a != b),
                 min(len(en_lines), len(ko_lines)))
        en_line = en_lines[n] if n < len(en_lines) else "<end of cell>"
        ko_line = ko_lines[n] if n < len(ko_lines) else "<end of cell>"
        if en_line == ko_line:  # only trailing whitespace or newlines differ
            en_line, ko_line = repr(en.source[-20:]), repr(ko.source[-20:])
        lines.append(f"code cell {i} differs at its line {n + 1}:\n"
                     f"    English: {en_line}\n    Korean:  {ko_line}")
    return lines


def compare(english: Path, korean: Path) -> list[str]:
    """Everything that differs between a notebook and its Korean twin (empty when in step)."""
    en_cells = nbformat.read(english, as_version=4).cells
    ko_cells = nbformat.read(korean, as_version=4).cells
    problems = _structure_problems(en_cells, ko_cells)
    return problems or _code_problems(en_cells, ko_cells)


def check(root: Path = ROOT) -> dict[str, list[str]]:
    """``{notebook: problems}`` for every notebook not in step (empty when all are).

    A missing twin is the single problem ``"missing"``.
    """
    report: dict[str, list[str]] = {}
    english = english_notebooks(root)
    for path in english:
        twin = korean_twin(path)
        if not twin.is_file():
            report[_rel(twin, root)] = ["missing"]
        elif problems := compare(path, twin):
            report[_rel(twin, root)] = problems
    names = {p.name for p in english}
    for orphan in sorted((root / "notebooks" / KOREAN).glob("*.ipynb")):
        if orphan.name not in names:
            report[_rel(orphan, root)] = [f"no English notebook notebooks/{orphan.name}"]
    return report


def missing(report: dict[str, list[str]]) -> list[str]:
    """The Korean notebooks that ``check`` found missing."""
    return [name for name, problems in report.items() if problems == ["missing"]]


def format_report(report: dict[str, list[str]]) -> str:
    lines = []
    if gone := missing(report):
        lines.append(f"missing Korean notebooks ({len(gone)}): {', '.join(gone)}")
    for name, problems in report.items():
        if problems != ["missing"]:
            lines.append(f"{name}:")
            lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


def sync_code(name: str, root: Path = ROOT) -> list[int]:
    """Copy the English code cells' sources into the Korean twin; returns the cells changed.

    Raises ValueError (changing nothing) when the twin is missing or its cell types differ.
    """
    english = _english_path(name, root)
    korean = korean_twin(english)
    if not english.is_file():
        raise ValueError(f"no English notebook {_rel(english, root)}")
    if not korean.is_file():
        raise ValueError(f"no Korean notebook {_rel(korean, root)}: copy "
                         f"{_rel(english, root)} there and translate its markdown cells first")
    en_nb = nbformat.read(english, as_version=4)
    ko_nb = nbformat.read(korean, as_version=4)
    if problems := _structure_problems(en_nb.cells, ko_nb.cells):
        raise ValueError(f"{_rel(korean, root)}: not synced, the cell structure differs from "
                         f"{_rel(english, root)}; fix it by hand first:\n" + "\n".join(problems))
    changed = [i for i, (en, ko) in enumerate(zip(en_nb.cells, ko_nb.cells, strict=True))
               if en.cell_type == "code" and en.source != ko.source]
    for i in changed:
        ko_nb.cells[i].source = en_nb.cells[i].source
    if changed:
        nbformat.write(ko_nb, korean)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="exit 1, listing what differs between the two editions")
    sync = commands.add_parser("sync-code", help="copy the English code cells into the Korean twin")
    sync.add_argument("notebook",
                      help="NN_name, e.g. 01_vae_theory (a path to either edition works)")
    args = parser.parse_args(argv)

    if args.command == "check":
        report = check()
        if report:
            print(format_report(report))
            return 1
        print(f"{len(english_notebooks())} notebooks: "
              "every Korean twin has the same cells and code")
        return 0
    try:
        changed = sync_code(args.notebook)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    korean = _rel(korean_twin(_english_path(args.notebook, ROOT)), ROOT)
    if changed:
        print(f"{korean}: copied {len(changed)} code cell(s) from English: "
              f"{', '.join(map(str, changed))} (their outputs are stale: re-run the notebook)")
    else:
        print(f"{korean}: code cells already identical, nothing changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
