"""Encoder and decoder builders.

Every encoder maps ``[B, *data_shape]`` to ``[B, 2 * latent_dim]`` (the mean
and an unconstrained scale parameter of q(z|x)); every decoder maps
``[B, latent_dim]`` to ``[B, *data_shape]`` (one distribution parameter per
data value, see :mod:`tfvae.likelihoods`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers

from tfvae.config import NETWORK_NAMES  # declared there so the CLI lists them before TF loads

MLP_UNITS = (500,)
CONV_FILTERS = (32, 64)  # the encoder's; the decoder's are reversed


def mlp_encoder(data_shape: Sequence[int], latent_dim: int,
                hidden_units: Sequence[int] = (500,), activation: str = "tanh",
                name: str = "encoder") -> keras.Model:
    """Fully connected encoder (Kingma & Welling 2013, appendix C)."""
    inputs = keras.Input(shape=tuple(data_shape), name="x")
    h = layers.Flatten()(inputs)
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    outputs = layers.Dense(2 * latent_dim, name="q_params")(h)
    return keras.Model(inputs, outputs, name=name)


def mlp_decoder(data_shape: Sequence[int], latent_dim: int,
                hidden_units: Sequence[int] = (500,), activation: str = "tanh",
                name: str = "decoder") -> keras.Model:
    """Fully connected decoder, the mirror of :func:`mlp_encoder`."""
    inputs = keras.Input(shape=(latent_dim,), name="z")
    h = inputs
    for i, units in enumerate(reversed(tuple(hidden_units))):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    h = layers.Dense(math.prod(data_shape), name="p_params")(h)
    outputs = layers.Reshape(tuple(data_shape))(h)
    return keras.Model(inputs, outputs, name=name)


def conv_encoder(data_shape: Sequence[int], latent_dim: int,
                 filters: Sequence[int] = CONV_FILTERS, name: str = "encoder") -> keras.Model:
    """Two stride-2 3x3 convolutions, then a dense layer to q's parameters.

    Height and width must be divisible by ``2 ** len(filters)``.
    """
    _check_divisible(data_shape, len(filters))
    inputs = keras.Input(shape=tuple(data_shape), name="x")
    h = inputs
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"conv_{i}")(h)
    h = layers.Flatten()(h)
    outputs = layers.Dense(2 * latent_dim, name="q_params")(h)
    return keras.Model(inputs, outputs, name=name)


def conv_decoder(data_shape: Sequence[int], latent_dim: int,
                 filters: Sequence[int] = CONV_FILTERS[::-1], name: str = "decoder"
                 ) -> keras.Model:
    """Dense to a small feature map, two stride-2 transposed convolutions,
    then a 3x3 convolution to one parameter per pixel and channel."""
    _check_divisible(data_shape, len(filters))
    height, width, channels = data_shape
    factor = 2 ** len(filters)
    inputs = keras.Input(shape=(latent_dim,), name="z")
    h = layers.Dense((height // factor) * (width // factor) * filters[0], activation="relu")(inputs)
    h = layers.Reshape((height // factor, width // factor, filters[0]))(h)
    for i, f in enumerate(filters):
        h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu",
                                   name=f"deconv_{i}")(h)
    outputs = layers.Conv2D(channels, 3, padding="same", name="p_params")(h)
    return keras.Model(inputs, outputs, name=name)


def _check_divisible(data_shape, n_halvings):
    if len(data_shape) != 3:
        raise ValueError(
            f"conv networks need data_shape (height, width, channels), got {tuple(data_shape)}."
        )
    factor = 2 ** n_halvings
    if data_shape[0] % factor or data_shape[1] % factor:
        raise ValueError(
            f"conv networks need height and width divisible by {factor}, got {tuple(data_shape)}."
        )


def build_networks(kind: str, data_shape: Sequence[int], latent_dim: int,
                   hidden_units: Sequence[int] | None = None) -> tuple[keras.Model, keras.Model]:
    """An (encoder, decoder) pair by name.

    Args:
        kind: ``"mlp"`` (Kingma & Welling: one tanh layer; 500 units unless
            ``hidden_units`` says otherwise, the paper used 200 for Frey Face)
            or ``"conv"``.
        data_shape: one example's shape, e.g. ``(28, 28, 1)``.
        latent_dim: size of z.
        hidden_units: MLP hidden layer sizes, e.g. ``(200, 200)`` for the
            network of Burda et al. 2015.
    """
    if kind == "mlp":
        units = tuple(hidden_units) if hidden_units else MLP_UNITS
        return (mlp_encoder(data_shape, latent_dim, units),
                mlp_decoder(data_shape, latent_dim, units))
    if kind == "conv":
        return conv_encoder(data_shape, latent_dim), conv_decoder(data_shape, latent_dim)
    raise ValueError(f"Unknown network {kind!r}. Expected one of {', '.join(NETWORK_NAMES)}.")


def count_parameters(kind: str, data_shape: Sequence[int], latent_dim: int,
                     hidden_units: Sequence[int] | None = None) -> int:
    """Weights of :func:`build_networks`'s encoder and decoder, counted from
    the layer sizes without building them (so that a model too large for the
    machine can be refused before it is built)."""
    def dense(n_in, n_out):
        return (n_in + 1) * n_out

    size = math.prod(data_shape)
    if kind == "mlp":
        units = tuple(hidden_units) if hidden_units else MLP_UNITS
        sizes = [size, *units, 2 * latent_dim], [latent_dim, *units[::-1], size]
        return sum(dense(a, b) for layers in sizes for a, b in zip(layers, layers[1:]))
    if kind == "conv":
        _check_divisible(data_shape, len(CONV_FILTERS))
        height, width, channels = data_shape
        cells = (height // 2 ** len(CONV_FILTERS)) * (width // 2 ** len(CONV_FILTERS))
        encoder = [channels, *CONV_FILTERS]
        decoder = [CONV_FILTERS[-1], *CONV_FILTERS[::-1], channels]  # transposed convs, out
        convs = sum(dense(9 * a, b) for layers in (encoder, decoder)
                    for a, b in zip(layers, layers[1:]))
        return (convs + dense(cells * CONV_FILTERS[-1], 2 * latent_dim)
                + dense(latent_dim, cells * CONV_FILTERS[-1]))
    raise ValueError(f"Unknown network {kind!r}. Expected one of {', '.join(NETWORK_NAMES)}.")
