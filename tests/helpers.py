"""Small builders shared by the unit tests."""

from __future__ import annotations

import keras

import tfvae


def small_vae(data_shape=(4, 4, 1), latent_dim=3, hidden=(16,), **kwargs) -> tfvae.VAE:
    """A tiny MLP VAE for fast tests."""
    keras.utils.set_random_seed(kwargs.pop("init_seed", 0))
    encoder = tfvae.networks.mlp_encoder(data_shape, latent_dim, hidden)
    decoder = tfvae.networks.mlp_decoder(data_shape, latent_dim, hidden)
    return tfvae.VAE(encoder, decoder, latent_dim, **kwargs)
