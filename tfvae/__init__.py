"""tfvae: Variational Auto-Encoders for Keras 3 with TensorFlow Probability.

>>> import tfvae
>>> encoder, decoder = tfvae.networks.build_networks("mlp", (28, 28, 1), latent_dim=20)
>>> vae = tfvae.VAE(encoder, decoder, latent_dim=20, likelihood="bernoulli")
>>> vae.compile()
"""

import os as _os

# Keras 3 on TensorFlow; TFP imports tf_keras (Keras 2) for its own layers only.
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfvae import (  # noqa: E402
    callbacks,
    checkpoints,
    config,
    datasets,
    importance,
    latent,
    likelihoods,
    networks,
    optimizers,
    plot,
    priors,
    runs,
)
from tfvae.callbacks import KLWarmup, TrainingDiverged  # noqa: E402
from tfvae.config import TrainConfig  # noqa: E402
from tfvae.likelihoods import Bernoulli, ContinuousBernoulli, Normal  # noqa: E402
from tfvae.model import VAE  # noqa: E402
from tfvae.optimizers import FusedAdam  # noqa: E402
from tfvae.priors import StandardNormal, standard_normal_prior  # noqa: E402
from tfvae.training import train  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "TrainConfig",
    "train",
    "KLWarmup",
    "TrainingDiverged",
    "FusedAdam",
    "StandardNormal",
    "Bernoulli",
    "ContinuousBernoulli",
    "Normal",
    "callbacks",
    "checkpoints",
    "config",
    "datasets",
    "importance",
    "latent",
    "likelihoods",
    "networks",
    "optimizers",
    "plot",
    "priors",
    "runs",
    "standard_normal_prior",
]
