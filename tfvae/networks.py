"""Encoder and decoder builders (and :func:`mlp_classifier`, the classifier
q(y|x) of :class:`tfvae.semi_supervised.SemiSupervisedVAE`).

Every encoder maps ``[B, *data_shape]`` to ``[B, 2 * latent_dim]`` (the mean
and an unconstrained scale parameter of q(z|x)); every decoder maps
``[B, latent_dim]`` to ``[B, *data_shape]`` (one distribution parameter per
data value, see :mod:`tfvae.likelihoods`).

With ``condition_dim=C > 0`` the networks of a conditional VAE are built:
the encoder takes ``[x, c]`` and the decoder ``[z, c]``, where ``c`` is a
``[B, C]`` conditioning vector (the one-hot class label of
:class:`tfvae.VAE` with ``num_classes``), i.e. q(z|x,c) and p(x|z,c).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import layers

from tfvae.config import NETWORK_NAMES  # declared there so the CLI lists them before TF loads

MLP_UNITS = (500,)
CONV_FILTERS = (32, 64)  # the encoder's; the decoder's are reversed


def _inputs(shape: Sequence[int], name: str, condition_dim: int) -> list:
    """The network's inputs: ``[main]``, or ``[main, condition]`` when ``condition_dim > 0``."""
    inputs = [keras.Input(shape=tuple(shape), name=name)]
    if condition_dim:
        inputs.append(keras.Input(shape=(int(condition_dim),), name="condition"))
    return inputs


def _with_condition(h, inputs: list):
    """``h`` (``[B, n]``) with the condition appended, if the network has one."""
    return layers.Concatenate(name="with_condition")([h, inputs[1]]) if len(inputs) > 1 else h


def _model(inputs: list, outputs, name: str) -> keras.Model:
    # One input stays a single tensor, so that unconditional networks are as before.
    return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=name)


def mlp_encoder(data_shape: Sequence[int], latent_dim: int,
                hidden_units: Sequence[int] = (500,), activation: str = "tanh",
                name: str = "encoder", condition_dim: int = 0) -> keras.Model:
    """Fully connected encoder (Kingma & Welling 2013, appendix C).

    With ``condition_dim`` the condition is appended to the flattened image
    (Kingma et al. 2014's M2 encoder q(z|x,y))."""
    inputs = _inputs(data_shape, "x", condition_dim)
    h = _with_condition(layers.Flatten()(inputs[0]), inputs)
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    outputs = layers.Dense(2 * latent_dim, name="q_params")(h)
    return _model(inputs, outputs, name)


def mlp_decoder(data_shape: Sequence[int], latent_dim: int,
                hidden_units: Sequence[int] = (500,), activation: str = "tanh",
                name: str = "decoder", condition_dim: int = 0) -> keras.Model:
    """Fully connected decoder, the mirror of :func:`mlp_encoder`; with
    ``condition_dim`` the condition is appended to z."""
    inputs = _inputs((latent_dim,), "z", condition_dim)
    h = _with_condition(inputs[0], inputs)
    for i, units in enumerate(reversed(tuple(hidden_units))):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    h = layers.Dense(math.prod(data_shape), name="p_params")(h)
    outputs = layers.Reshape(tuple(data_shape))(h)
    return _model(inputs, outputs, name)


def mlp_classifier(data_shape: Sequence[int], num_classes: int,
                   hidden_units: Sequence[int] = (500,), activation: str = "softplus",
                   name: str = "classifier") -> keras.Model:
    """Fully connected classifier q(y|x): ``[B, *data_shape]`` to ``[B, num_classes]``
    logits (Kingma et al. 2014's M2: one hidden layer of 500 softplus units)."""
    inputs = keras.Input(shape=tuple(data_shape), name="x")
    h = layers.Flatten()(inputs)
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    outputs = layers.Dense(int(num_classes), name="logits")(h)
    return keras.Model(inputs, outputs, name=name)


def conv_encoder(data_shape: Sequence[int], latent_dim: int,
                 filters: Sequence[int] = CONV_FILTERS, name: str = "encoder",
                 condition_dim: int = 0) -> keras.Model:
    """Two stride-2 3x3 convolutions, then a dense layer to q's parameters.

    Height and width must be divisible by ``2 ** len(filters)``. With
    ``condition_dim`` the condition is appended to the flattened features,
    before the dense layer.
    """
    # Why after the flatten and not as constant extra image channels: a class
    # label says nothing about where in the image anything is, so broadcasting
    # it over every pixel only adds C input channels to the first convolution
    # (as many constant maps as classes) for what one dense layer receives
    # as C numbers; it is also the same place as in the MLP.
    _check_divisible(data_shape, len(filters))
    inputs = _inputs(data_shape, "x", condition_dim)
    h = inputs[0]
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=f"conv_{i}")(h)
    h = _with_condition(layers.Flatten()(h), inputs)
    outputs = layers.Dense(2 * latent_dim, name="q_params")(h)
    return _model(inputs, outputs, name)


def conv_decoder(data_shape: Sequence[int], latent_dim: int,
                 filters: Sequence[int] = CONV_FILTERS[::-1], name: str = "decoder",
                 condition_dim: int = 0) -> keras.Model:
    """Dense to a small feature map, two stride-2 transposed convolutions,
    then a 3x3 convolution to one parameter per pixel and channel. With
    ``condition_dim`` the condition is appended to z (so it reaches every layer)."""
    _check_divisible(data_shape, len(filters))
    height, width, channels = data_shape
    factor = 2 ** len(filters)
    inputs = _inputs((latent_dim,), "z", condition_dim)
    h = layers.Dense((height // factor) * (width // factor) * filters[0],
                     activation="relu")(_with_condition(inputs[0], inputs))
    h = layers.Reshape((height // factor, width // factor, filters[0]))(h)
    for i, f in enumerate(filters):
        h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu",
                                   name=f"deconv_{i}")(h)
    outputs = layers.Conv2D(channels, 3, padding="same", name="p_params")(h)
    return _model(inputs, outputs, name)


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
                   hidden_units: Sequence[int] | None = None, condition_dim: int = 0
                   ) -> tuple[keras.Model, keras.Model]:
    """An (encoder, decoder) pair by name.

    Args:
        kind: ``"mlp"`` (Kingma & Welling: one tanh layer; 500 units unless
            ``hidden_units`` says otherwise, the paper used 200 for Frey Face)
            or ``"conv"``.
        data_shape: one example's shape, e.g. ``(28, 28, 1)``.
        latent_dim: size of z.
        hidden_units: MLP hidden layer sizes, e.g. ``(200, 200)`` for the
            network of Burda et al. 2015.
        condition_dim: size C of a conditioning vector (e.g. the number of
            classes, for one-hot labels); 0: unconditional networks.
    """
    c = int(condition_dim)
    if kind == "mlp":
        units = tuple(hidden_units) if hidden_units else MLP_UNITS
        return (mlp_encoder(data_shape, latent_dim, units, condition_dim=c),
                mlp_decoder(data_shape, latent_dim, units, condition_dim=c))
    if kind == "conv":
        return (conv_encoder(data_shape, latent_dim, condition_dim=c),
                conv_decoder(data_shape, latent_dim, condition_dim=c))
    raise ValueError(f"Unknown network {kind!r}. Expected one of {', '.join(NETWORK_NAMES)}.")


def count_parameters(kind: str, data_shape: Sequence[int], latent_dim: int,
                     hidden_units: Sequence[int] | None = None, condition_dim: int = 0) -> int:
    """Weights of :func:`build_networks`'s encoder and decoder, counted from
    the layer sizes without building them (so that a model too large for the
    machine can be refused before it is built)."""
    def dense(n_in, n_out):
        return (n_in + 1) * n_out

    size = math.prod(data_shape)
    if kind == "mlp":
        units = tuple(hidden_units) if hidden_units else MLP_UNITS
        sizes = ([size + condition_dim, *units, 2 * latent_dim],
                 [latent_dim + condition_dim, *units[::-1], size])
        return sum(dense(a, b) for layers in sizes for a, b in zip(layers, layers[1:]))
    if kind == "conv":
        _check_divisible(data_shape, len(CONV_FILTERS))
        height, width, channels = data_shape
        cells = (height // 2 ** len(CONV_FILTERS)) * (width // 2 ** len(CONV_FILTERS))
        encoder = [channels, *CONV_FILTERS]
        decoder = [CONV_FILTERS[-1], *CONV_FILTERS[::-1], channels]  # transposed convs, out
        convs = sum(dense(9 * a, b) for layers in (encoder, decoder)
                    for a, b in zip(layers, layers[1:]))
        return (convs + dense(cells * CONV_FILTERS[-1] + condition_dim, 2 * latent_dim)
                + dense(latent_dim + condition_dim, cells * CONV_FILTERS[-1]))
    raise ValueError(f"Unknown network {kind!r}. Expected one of {', '.join(NETWORK_NAMES)}.")
