"""tfvae: Variational Auto-Encoders for Keras 3 with TensorFlow Probability.

>>> import tfvae
>>> encoder, decoder = tfvae.networks.build_networks("mlp", (28, 28, 1), latent_dim=20)
>>> vae = tfvae.VAE(encoder, decoder, latent_dim=20, likelihood="bernoulli")
>>> vae.compile()
"""

import importlib as _importlib
import os as _os
import sys as _sys
from pathlib import Path as _Path

# Keras 3 on TensorFlow; TFP imports tf_keras (Keras 2) for its own layers only.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_MODULES = ("callbacks", "checkpoints", "config", "datasets", "flows", "importance", "latent",
            "likelihoods", "networks", "optimizers", "pixelcnn", "pixelvae", "plot", "priors",
            "runs", "semi_supervised")
_NAMES = {"VAE": "model", "TrainConfig": "config", "train": "training", "KLWarmup": "callbacks",
          "TrainingDiverged": "callbacks", "FusedAdam": "optimizers",
          "StandardNormal": "priors", "Bernoulli": "likelihoods",
          "ContinuousBernoulli": "likelihoods", "Normal": "likelihoods",
          "standard_normal_prior": "priors", "PixelCNN": "pixelcnn",
          "SemiSupervisedVAE": "semi_supervised", "InverseAutoregressiveFlow": "flows"}
__all__ = [*_NAMES, *_MODULES]


def __getattr__(name: str):
    """Submodules and public names, imported on first use (PEP 562)."""
    if name in _NAMES:
        value = getattr(_importlib.import_module(f"tfvae.{_NAMES[name]}"), name)
    elif (_Path(__file__).parent / f"{name}.py").is_file():
        value = _importlib.import_module(f"tfvae.{name}")
    else:
        raise AttributeError(f"module 'tfvae' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _started_as_command_line() -> bool:
    """True while ``python -m tfvae`` (``sys.argv[0]`` is ``"-m"`` while Python
    looks for the module) or the ``tfvae`` script imports this package."""
    argv0 = (getattr(_sys, "argv", None) or [""])[0]
    return argv0 == "-m" or _Path(argv0).stem == "tfvae"


# The command line imports TensorFlow only once a command runs, so that --help and
# argument errors are instant. Everywhere else everything is imported now, which
# also registers tfvae's classes with Keras: keras.models.load_model then reads a
# tfvae model after a plain ``import tfvae``.
if not _started_as_command_line():
    from tfvae.startup import quiet_tensorflow as _quiet_tensorflow

    _quiet_tensorflow()
    for _module in (*_MODULES, "model", "training"):
        _importlib.import_module(f"tfvae.{_module}")
