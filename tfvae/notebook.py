"""Helpers for the tutorial notebooks: train once, then reuse the saved model;
read the benchmark results committed with the repository.

A reader on a second visit, or in a hurry, can skip training: :func:`fit_or_load`
loads a model that an earlier run of the same cell saved, with its training
history, instead of training again. :func:`benchmark_results` lets a notebook
print a long benchmark's result (an hour of training) that it cannot re-run.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from tfvae import checkpoints
from tfvae.files import read_json, write_json


def fit_or_load(model: keras.Model, path: str | os.PathLike, *fit_args, reuse: bool = True,
                **fit_kwargs) -> tuple[keras.Model, dict[str, list[float]]]:
    """``model.fit(*fit_args, **fit_kwargs)`` then save, or load what was saved.

    Args:
        model: a compiled model (a :class:`tfvae.VAE` or any Keras model).
        path: a ``.keras`` file. If it exists (and ``reuse``), the model saved
            there is loaded and returned with its history, and nothing is
            trained; otherwise ``model`` is trained and saved there
            (atomically), its history beside it (``path`` + ``.history.json``).
        reuse: False trains even when ``path`` exists (and overwrites it).

    Returns:
        ``(model, history)``: the trained or loaded model, and the per-epoch
        logs of its training (``keras.callbacks.History.history``).
    """
    path = Path(path)
    history_path = path.with_name(path.name + ".history.json")
    history = read_json(history_path)
    if reuse and path.is_file() and history is not None:
        import tfvae.model  # noqa: F401  (registers tfvae's classes with Keras)

        loaded = keras.saving.load_model(path)
        print(f"Loaded {path} (trained earlier; delete it, or pass reuse=False, to train again).")
        return loaded, history
    history = model.fit(*fit_args, **fit_kwargs).history
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.save_model(model, path)
    write_json(history_path, {k: [float(v) for v in vs] for k, vs in history.items()})
    return model, history


BENCHMARK_RESULTS = Path("benchmarks") / "results"


def benchmark_results(pattern: str) -> dict[str, dict]:
    """The benchmark result files matching ``pattern`` (a glob such as
    ``"burda_nll*.json"``, or one file name), read from the ``benchmarks/results/``
    folder of the working directory or of the nearest folder above it that has one.

    Returns:
        ``{file name: contents}`` sorted by name; ``{}`` when there is no such
        folder (a notebook run outside the repository, e.g. on Colab after
        ``pip install``) or no file matches.
    """
    cwd = Path.cwd()
    folder = next((d / BENCHMARK_RESULTS for d in (cwd, *cwd.parents)
                   if (d / BENCHMARK_RESULTS).is_dir()), None)
    if folder is None:
        return {}
    return {path.name: read_json(path) for path in sorted(folder.glob(pattern))}
