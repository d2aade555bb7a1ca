"""Model files: saved atomically, checked cheaply, loaded with one clear error.

A model file is a Keras ``.keras`` archive. :func:`save_model` writes it
through :func:`tfvae.files.atomic_path`, so a failed save never clobbers a
good file; :func:`load_model` turns any bad file into one
:class:`ModelFileError` that names it.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from tfvae.files import atomic_path


class ModelFileError(ValueError):
    """A model file is missing, truncated, or not a saved :class:`tfvae.VAE`."""


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.save(path)`` (a ``.keras`` file), atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


# --------------------------------------------------------------- model files
def check_model_file(path: str | os.PathLike) -> None:
    """Cheap checks that ``path`` is a complete ``.keras`` file holding a tfvae VAE.

    Reads only the archive's directory and ``config.json``; no TensorFlow work.

    Raises:
        ModelFileError: missing file, not a (complete) zip archive, or a saved
            model of another class.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist (expected a .keras file "
                             f"written by 'tfvae train' or VAE.save).")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            if archive.testzip() is not None:
                raise zipfile.BadZipFile("a member fails its CRC check")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as error:
        raise ModelFileError(
            f"model file {path} is truncated or not a .keras file ({error}); expected a "
            f"complete .keras archive written by 'tfvae train' or VAE.save."
        ) from error
    name = config.get("registered_name") or config.get("class_name")
    # The VAE and its subclass tfvae.semi_supervised.SemiSupervisedVAE.
    if name not in ("tfvae>VAE", "VAE", "tfvae>SemiSupervisedVAE"):
        raise ModelFileError(
            f"model file {path} holds a {name!r} model; expected a tfvae VAE (registered "
            f"name 'tfvae>VAE')."
        )


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """Load a saved :class:`tfvae.VAE`, with one clear error for any bad file.

    Raises:
        ModelFileError: see :func:`check_model_file`, or Keras failed to
            rebuild the model from the file.
    """
    check_model_file(path)
    from tfvae.model import VAE  # registers the tfvae classes with Keras

    try:
        model = keras.saving.load_model(path, compile=compile)
    except Exception as error:  # Keras raises many types for a bad archive
        raise ModelFileError(f"model file {path} cannot be loaded: {error}") from error
    if not isinstance(model, VAE):
        raise ModelFileError(f"model file {path} holds a {type(model).__name__}; expected a VAE.")
    return model


def weights_are_finite(model: keras.Model) -> bool:
    """True when every weight of ``model`` is finite (no NaN or inf)."""
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)
