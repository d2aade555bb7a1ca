"""Small builders shared by the unit tests."""

from __future__ import annotations

import keras
import numpy as np

import tfvae


def random_binary(n: int, shape: tuple, p: float = 0.4, seed: int = 0) -> np.ndarray:
    """``[n, *shape]`` float32 pixels, each 1 with probability ``p`` (fixed by ``seed``)."""
    return (np.random.default_rng(seed).random((n, *shape)) < p).astype(np.float32)


def small_vae(data_shape=(4, 4, 1), latent_dim=3, hidden=(16,), **kwargs) -> tfvae.VAE:
    """A tiny MLP VAE for fast tests."""
    keras.utils.set_random_seed(kwargs.pop("init_seed", 0))
    encoder = tfvae.networks.mlp_encoder(data_shape, latent_dim, hidden)
    decoder = tfvae.networks.mlp_decoder(data_shape, latent_dim, hidden)
    return tfvae.VAE(encoder, decoder, latent_dim, **kwargs)
