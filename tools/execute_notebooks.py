"""Execute notebooks in place, so that their committed outputs come from a real run.

    python tools/execute_notebooks.py notebooks/03_training_mnist.ipynb          # full run
    python tools/execute_notebooks.py --quick notebooks/*.ipynb                  # TFVAE_QUICK=1

Each notebook runs in its own folder (as Jupyter and nbval run it), with a
progress line per notebook and its wall time at the end.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, quick: bool, timeout: int) -> float:
    """Run every cell of ``path`` and write the outputs back; returns seconds."""
    notebook = nbformat.read(path, as_version=4)
    os.environ["TFVAE_QUICK"] = "1" if quick else "0"
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.time()
    client.execute()
    nbformat.write(notebook, path)
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--quick", action="store_true", help="TFVAE_QUICK=1 (the tests' mode)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args()
    for path in args.notebooks:
        print(f"{path}: running ({'quick' if args.quick else 'full'} mode)...", flush=True)
        print(f"{path}: done in {execute(path, args.quick, args.timeout):.0f} s", flush=True)


if __name__ == "__main__":
    main()
