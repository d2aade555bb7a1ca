"""The notebooks' Colab badges and setup cells agree with the one URL in pyproject.toml.

tools/sync_notebooks.py writes them; these tests call its check, compile the setup cell, and run
it in a subprocess that pretends to be Colab (a fake ``google.colab`` module, tfvae not
importable, and a fake ``pip`` that records its arguments), so nothing is ever installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sync_notebooks  # noqa: E402

URL = sync_notebooks.repository_url()


def test_the_url_lives_in_pyproject():
    assert URL.startswith("https://github.com/") and not URL.endswith((".git", "/"))


def test_every_notebook_has_the_badge_and_setup_cell_of_the_url():
    assert sync_notebooks.notebooks(), "no notebooks found"
    problems = sync_notebooks.check()
    assert not problems, ("run `python tools/sync_notebooks.py`:\n" + "\n".join(problems))


def test_every_setup_cell_compiles():
    compile(sync_notebooks.setup_source(URL), "setup cell template", "exec")
    for path in sync_notebooks.notebooks():
        nb = nbformat.read(path, as_version=4)
        setup = next(c for c in nb.cells if c.cell_type == "code")
        compile(setup.source, f"{path.name}: setup cell", "exec")


def test_check_finds_a_stale_notebook_and_sync_fixes_it(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[project.urls]\nRepository = "https://github.com/someone/elsewhere"\n')
    (tmp_path / "notebooks" / "ko").mkdir(parents=True)
    stale = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell(
            "# 01 · Title\n\n" + sync_notebooks.badge(URL, "notebooks/ko/01.ipynb") + "\n\nText."),
        nbformat.v4.new_code_cell("# Setup: an old cell\nimport sys"),
        nbformat.v4.new_code_cell("x = 1"),
    ])
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 02 · Title"),
                                           nbformat.v4.new_code_cell("y = 2")])
    nbformat.write(stale, tmp_path / "notebooks" / "ko" / "01.ipynb")
    nbformat.write(bare, tmp_path / "notebooks" / "02.ipynb")

    problems = sync_notebooks.check(root=tmp_path)
    assert problems == [
        "notebooks/02.ipynb: no Colab badge in the first markdown cell (added); "
        "no setup cell (added before the first code cell)",
        "notebooks/ko/01.ipynb: Colab badge links elsewhere; setup cell differs from the template",
    ]
    assert len(sync_notebooks.sync(root=tmp_path)) == 2
    assert sync_notebooks.check(root=tmp_path) == []

    fixed = nbformat.read(tmp_path / "notebooks" / "ko" / "01.ipynb", as_version=4)
    want = ("https://colab.research.google.com/github/someone/elsewhere/blob/main/"
            "notebooks/ko/01.ipynb")
    assert want in fixed.cells[0].source and fixed.cells[0].source.endswith("Text.")
    assert 'REPO = "https://github.com/someone/elsewhere"' in fixed.cells[1].source
    assert fixed.cells[2].source == "x = 1"
    added = nbformat.read(tmp_path / "notebooks" / "02.ipynb", as_version=4)
    assert [c.source.splitlines()[0] for c in added.cells] == [
        "# 02 · Title", sync_notebooks.setup_source(URL).splitlines()[0], "y = 2"]


def run_setup_cell(tmp_path, *, colab: bool, tfvae_importable: bool = False,
                   pip_rcs: tuple[int, ...] = (0, 0)):
    """Run the setup cell in a fresh interpreter; returns (stdout + stderr, pip calls).

    The fake pip's n-th call exits with ``pip_rcs[n]``.
    """
    fake_pip = tmp_path / "pip"
    fake_pip.mkdir(exist_ok=True)
    (fake_pip / "__init__.py").write_text("")
    (fake_pip / "__main__.py").write_text(
        "import json, os, sys\n"
        "log = os.environ['FAKE_PIP_LOG']\n"
        "n = len(open(log).readlines()) if os.path.exists(log) else 0\n"
        "with open(log, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "print('ERROR: pip says something long')\n"
        "sys.exit(int(os.environ['FAKE_PIP_RCS'].split(',')[n]))\n")
    log = tmp_path / "pip_calls.jsonl"
    log.unlink(missing_ok=True)
    prelude = "import sys, types\n"
    if colab:
        prelude += "sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
    prelude += ("sys.modules['tfvae'] = types.ModuleType('tfvae')\n" if tfvae_importable
                else "sys.modules['tfvae'] = None  # import tfvae raises ImportError\n")
    program = prelude + sync_notebooks.setup_source(URL) + "\n"
    env = {**os.environ, "FAKE_PIP_LOG": str(log), "FAKE_PIP_RCS": ",".join(map(str, pip_rcs)),
           "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result.stdout + result.stderr, calls


def test_setup_cell_does_nothing_outside_colab(tmp_path):
    assert run_setup_cell(tmp_path, colab=False) == ("", [])


def test_setup_cell_does_nothing_on_colab_when_tfvae_imports(tmp_path):
    assert run_setup_cell(tmp_path, colab=True, tfvae_importable=True) == ("", [])


def test_setup_cell_on_colab_installs_from_the_url_with_tf_keras_pinned(tmp_path):
    output, calls = run_setup_cell(tmp_path, colab=True)
    tf_minor = ".".join(importlib.metadata.version("tensorflow").split(".")[:2])
    assert calls == [["install", "-q", "tensorflow-probability==0.25.0", f"tf-keras=={tf_minor}.*"],
                     ["install", "-q", f"tfvae @ git+{URL}.git"]]
    assert output == f"Installing tfvae from {URL} ...\n"


@pytest.mark.parametrize("pip_rcs", [(1, 0), (0, 1)], ids=["dependencies fail", "tfvae fails"])
def test_setup_cell_on_colab_says_in_one_line_what_to_do_when_pip_fails(tmp_path, pip_rcs):
    output, calls = run_setup_cell(tmp_path, colab=True, pip_rcs=pip_rcs)
    lines = output.splitlines()
    assert len(calls) == pip_rcs.index(1) + 1  # the first failure stops the install
    assert "Traceback" not in output and "ERROR" not in output  # pip's own output is not shown
    assert lines[0] == f"Installing tfvae from {URL} ..."
    assert len(lines) == 2 and URL in lines[1] and "pip install -e ." in lines[1]
    assert "upload its tfvae/ folder" in lines[1]
