"""Write every notebook's Colab badge and setup cell from the project URL in pyproject.toml.

    python tools/sync_notebooks.py                  # rewrite all notebooks under notebooks/
    python tools/sync_notebooks.py notebooks/01_vae_theory.ipynb
    python tools/sync_notebooks.py --check          # exit 1, listing the notebooks that disagree

The URL lives in one place, ``[project.urls] Repository`` of pyproject.toml. In each notebook
(notebooks/ and its subfolders, such as notebooks/ko/) the badge in the first markdown cell links
to that repository's copy of the notebook on Colab, and the first code cell (the setup cell) is
SETUP_TEMPLATE below with the URL filled in. Edit the template here, never a notebook's copy.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

SETUP_TEMPLATE = '''\
# Setup (Colab only): install tfvae if it is missing; elsewhere this cell does nothing.
# Written by tools/sync_notebooks.py from pyproject.toml: edit the template there, not here.
import importlib.metadata
import subprocess
import sys

REPO = "{url}"
if "google.colab" in sys.modules:
    try:
        import tfvae  # noqa: F401
    except ImportError:
        print(f"Installing tfvae from {{REPO}} ...")
        # tf-keras of the installed TensorFlow's minor version, so pip does not upgrade TensorFlow
        tf_minor = ".".join(importlib.metadata.version("tensorflow").split(".")[:2])
        pip = [sys.executable, "-m", "pip", "install", "-q"]
        steps = [["tensorflow-probability==0.25.0", f"tf-keras=={{tf_minor}}.*"],
                 [f"tfvae @ git+{{REPO}}.git"]]
        if any(subprocess.run(pip + step, capture_output=True).returncode for step in steps):
            print(f"Could not install tfvae: clone {{REPO}} and run `pip install -e .` in it, "
                  "or upload its tfvae/ folder to /content.")
'''

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_RE = re.compile(r"\[!\[Open In Colab\]\(" + re.escape(BADGE_IMAGE) + r"\)\]\([^)\s]*\)")


def repository_url(root: Path = ROOT) -> str:
    """``[project.urls] Repository`` of pyproject.toml, e.g. https://github.com/owner/repo."""
    with open(root / "pyproject.toml", "rb") as f:
        url = tomllib.load(f)["project"]["urls"]["Repository"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url) or url.endswith(".git"):
        raise ValueError(f"pyproject.toml: Repository = {url!r}; expected https://github.com/OWNER/REPO")
    return url


def setup_source(url: str) -> str:
    """The setup cell's source for the repository ``url``."""
    return SETUP_TEMPLATE.format(url=url).rstrip("\n")


def badge(url: str, notebook: str) -> str:
    """Markdown of the Colab badge for ``notebook`` (a path relative to the repository root)."""
    colab = url.replace("https://github.com/", "https://colab.research.google.com/github/", 1)
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab}/blob/main/{notebook})"


def notebooks(root: Path = ROOT) -> list[Path]:
    """Every notebook under notebooks/, subfolders included, checkpoints excluded."""
    return sorted(p for p in (root / "notebooks").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def _synced(path: Path, url: str, root: Path) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook at ``path`` with badge and setup cell rewritten, and what had to change."""
    nb = nbformat.read(path, as_version=4)
    changes = []
    want_badge = badge(url, path.resolve().relative_to(root.resolve()).as_posix())
    first_md = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if first_md is None or not BADGE_RE.search(first_md.source):
        changes.append("no Colab badge in the first markdown cell (added)")
        if first_md is None:
            nb.cells.insert(0, nbformat.v4.new_markdown_cell(want_badge))
        else:
            title, _, rest = first_md.source.partition("\n")
            first_md.source = f"{title}\n\n{want_badge}\n{rest.lstrip(chr(10))}".rstrip("\n")
    elif BADGE_RE.search(first_md.source).group(0) != want_badge:
        changes.append("Colab badge links elsewhere")
        first_md.source = BADGE_RE.sub(lambda _: want_badge, first_md.source, count=1)

    want_setup = setup_source(url)
    index, first_code = next(((i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"),
                             (len(nb.cells), None))
    if first_code is None or not first_code.source.startswith("# Setup"):
        changes.append("no setup cell (added before the first code cell)")
        nb.cells.insert(index, nbformat.v4.new_code_cell(want_setup))
    elif first_code.source != want_setup:
        changes.append("setup cell differs from the template")
        first_code.source = want_setup
    return nb, changes


def _run(paths: list[Path] | None, root: Path, write: bool) -> list[str]:
    url = repository_url(root)
    lines = []
    for path in map(Path, paths or notebooks(root)):
        nb, changes = _synced(path, url, root)
        if changes:
            if write:
                nbformat.write(nb, path)
            lines.append(f"{path.resolve().relative_to(root.resolve())}: {'; '.join(changes)}")
    return lines


def check(paths: list[Path] | None = None, root: Path = ROOT) -> list[str]:
    """One line per notebook whose badge or setup cell disagrees with pyproject.toml's URL."""
    return _run(paths, root, write=False)


def sync(paths: list[Path] | None = None, root: Path = ROOT) -> list[str]:
    """Rewrite the notebooks that disagree; returns one line per notebook changed."""
    return _run(paths, root, write=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to process (default: every notebook under notebooks/)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 listing the notebooks that disagree")
    args = parser.parse_args()
    url = repository_url()
    if args.check:
        problems = check(args.notebooks)
        for line in problems:
            print(line)
        if problems:
            print(f"{len(problems)} notebook(s) disagree with {url}: "
                  "run python tools/sync_notebooks.py", file=sys.stderr)
        return 1 if problems else 0
    for line in sync(args.notebooks):
        print("rewrote", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
