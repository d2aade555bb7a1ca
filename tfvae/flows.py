"""Inverse autoregressive flow (IAF) posteriors: q(z|x) richer than a diagonal Gaussian.

Kingma et al. 2016, "Improved Variational Inference with Inverse Autoregressive
Flow". A base draw ``z_0 = mu + sigma * eps`` of the encoder's diagonal Gaussian
goes through ``T`` steps, each

    [m, s] = MADE_t(z),   g = sigmoid(s + gate_bias),   z <- g * z + (1 - g) * m,

whose Jacobian is triangular (``m_d``, ``s_d`` depend on ``z_<d`` only), so
``log|det| = sum_d log g_d``. The steps alternate between the order
``1..D`` and ``D..1``: the same as reversing z between steps (Kingma et al.),
without moving the coordinates. Then

    log q(z_T|x) = log N(z_0; mu, sigma^2) - sum_t sum_d log g_{t,d}.

MADE (Germain et al. 2015) is an MLP whose weights are masked by degrees so
that output ``d`` sees inputs of lower degree only. These are Keras 3 layers
(TFP's ``AutoregressiveNetwork`` is Keras 2 only), serializable and saved with
the model. This version has no context ``h`` from the encoder (the encoder's
output stays the mean and raw scale).

Shapes: ``D = latent_dim``; ``...`` any leading axes (``[B]``, or ``[K, B]``
for importance samples). All log-densities in nats.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

from tfvae.config import DEFAULT_IAF_HIDDEN_UNITS
from tfvae.validation import check_count, check_number

tfd = tfp.distributions


def made_degrees(latent_dim: int, hidden_units: Sequence[int], reverse: bool = False
                 ) -> list[np.ndarray]:
    """The degrees of MADE's units: ``[inputs [D], hidden layer 1, ..., hidden layer L]``.

    Inputs get ``1..D`` (``D..1`` with ``reverse``); hidden units cycle through
    ``1..D-1`` (a hidden unit of degree k may see inputs of degree <= k), so
    that every output degree can be reached when a layer has ``D - 1`` units
    or more.
    """
    inputs = np.arange(1, latent_dim + 1)
    degrees = [inputs[::-1] if reverse else inputs]
    for units in hidden_units:
        degrees.append(np.arange(units) % max(1, latent_dim - 1) + 1)
    return degrees


def made_masks(latent_dim: int, hidden_units: Sequence[int], num_outputs: int = 2,
               reverse: bool = False) -> list[np.ndarray]:
    """0/1 float32 masks ``[units_in, units_out]`` of MADE's layers, input to output.

    Hidden layers connect ``degree_out >= degree_in``; the output layer
    (``num_outputs`` blocks of ``D`` units, each with the inputs' degrees)
    connects ``degree_out > degree_in``: output ``d`` depends on inputs
    before ``d`` in the order only.
    """
    degrees = made_degrees(latent_dim, hidden_units, reverse)
    masks = [(d_out[None, :] >= d_in[:, None]) for d_in, d_out in zip(degrees, degrees[1:])]
    outputs = np.tile(degrees[0], num_outputs)
    masks.append(outputs[None, :] > degrees[-1][:, None])
    return [m.astype(np.float32) for m in masks]


@keras.saving.register_keras_serializable(package="tfvae")
class MaskedDense(keras.layers.Layer):
    """``activation(x @ (kernel * mask) + bias)``: a dense layer with fixed connections.

    Args:
        mask: ``[units_in, units_out]`` 0/1 array; ``units_out`` is the layer's size.
        activation: a Keras activation name or ``None``.
    """

    def __init__(self, mask, activation: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, dtype=np.float32)
        if self.mask.ndim != 2:
            raise ValueError(f"mask must be 2-D [units_in, units_out], got shape "
                             f"{self.mask.shape}.")
        self.units = self.mask.shape[1]
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        if input_shape[-1] != self.mask.shape[0]:
            raise ValueError(f"MaskedDense got inputs of size {input_shape[-1]}; its mask "
                             f"expects {self.mask.shape[0]}.")
        self.kernel = self.add_weight(name="kernel", shape=self.mask.shape,
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, x):
        return self.activation(keras.ops.matmul(x, self.kernel * self.mask) + self.bias)

    def get_config(self):
        return {**super().get_config(), "mask": self.mask.tolist(),
                "activation": keras.activations.serialize(self.activation)}


@keras.saving.register_keras_serializable(package="tfvae")
class MADE(keras.layers.Layer):
    """Masked autoencoder for distribution estimation (Germain et al. 2015).

    Maps ``z [..., D]`` to ``num_outputs`` tensors ``[..., D]``; output ``d`` of
    each depends only on the inputs before ``d`` in the order (``1..D``, or
    ``D..1`` with ``reverse``). The masks follow from ``D``, ``hidden_units``
    and ``reverse``, so only those are saved.

    Args:
        hidden_units: sizes of the masked hidden layers (may be empty).
        num_outputs: parameters per dimension (2 for IAF: ``m`` and ``s``).
        reverse: use the order ``D..1``.
        activation: of the hidden layers.
    """

    def __init__(self, hidden_units: Sequence[int] = DEFAULT_IAF_HIDDEN_UNITS, num_outputs: int = 2,
                 reverse: bool = False, activation: str = "elu", **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(check_count(u, "hidden_units") for u in hidden_units)
        self.num_outputs = check_count(num_outputs, "num_outputs")
        self.reverse = bool(reverse)
        self.activation = activation

    def build(self, input_shape):
        latent_dim = int(input_shape[-1])
        masks = made_masks(latent_dim, self.hidden_units, self.num_outputs, self.reverse)
        self.masked_layers = [
            MaskedDense(mask, activation=None if i == len(masks) - 1 else self.activation,
                        name=f"masked_dense_{i}")
            for i, mask in enumerate(masks)]
        for layer, mask in zip(self.masked_layers, masks):
            layer.build((None, mask.shape[0]))

    def call(self, z):
        h = z
        for layer in self.masked_layers:
            h = layer(h)
        return keras.ops.split(h, self.num_outputs, axis=-1)

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units),
                "num_outputs": self.num_outputs, "reverse": self.reverse,
                "activation": self.activation}


@keras.saving.register_keras_serializable(package="tfvae")
class InverseAutoregressiveFlow(keras.layers.Layer):
    """An IAF of ``num_steps`` MADE steps on z (see the module docstring).

    ``call(z)`` returns ``(z_T, log_det)``: ``[..., D]`` and ``[...]``
    (``log|det dz_T/dz_0|``, nats). :meth:`inverse` undoes it;
    :meth:`posterior` turns a base distribution into the flow's.

    Args:
        num_steps: ``T >= 1`` steps; step ``t`` uses the order ``1..D`` for
            even ``t`` and ``D..1`` for odd ``t``.
        hidden_units: MADE's hidden layer sizes (the same for every step).
        activation: MADE's hidden activation (ELU, as Kingma et al.).
        gate_bias: added to ``s`` before the sigmoid, so that each step
            starts close to keeping z (``sigmoid(1) = 0.73``), as the paper
            advises for stable training.
    """

    def __init__(self, num_steps: int = 2, hidden_units: Sequence[int] = DEFAULT_IAF_HIDDEN_UNITS,
                 activation: str = "elu", gate_bias: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_steps = check_count(num_steps, "num_steps")
        if isinstance(hidden_units, (str, bytes)) or not isinstance(hidden_units, Sequence):
            raise ValueError(f"hidden_units must be a sequence of positive integers, got "
                             f"{hidden_units!r}.")
        self.hidden_units = tuple(check_count(u, "hidden_units") for u in hidden_units)
        self.activation = activation
        self.gate_bias = check_number(gate_bias, "gate_bias")
        self.made_steps = [MADE(self.hidden_units, num_outputs=2, reverse=bool(t % 2),
                                activation=activation, name=f"made_{t}")
                           for t in range(self.num_steps)]

    def build(self, input_shape):
        self.latent_dim = int(input_shape[-1])
        for made in self.made_steps:
            made.build((None, self.latent_dim))

    def build_for(self, latent_dim: int) -> None:
        """Build once for ``latent_dim``; a deserialised flow may be built already."""
        if not self.built:
            self.build((None, int(latent_dim)))
        elif self.latent_dim != int(latent_dim):
            raise ValueError(f"the flow was built for latent_dim {self.latent_dim}, "
                             f"not {latent_dim}.")

    def step(self, t: int, z):
        """Step ``t`` alone: ``(z', log_det)``, ``[..., D]`` and ``[...]``."""
        m, s = self.made_steps[t](z)
        gate_logits = s + self.gate_bias
        gate = keras.ops.sigmoid(gate_logits)
        return gate * z + (1.0 - gate) * m, keras.ops.sum(keras.ops.log_sigmoid(gate_logits), -1)

    def call(self, z):
        log_det = keras.ops.zeros_like(z[..., 0])
        for t in range(self.num_steps):
            z, step_log_det = self.step(t, z)
            log_det = log_det + step_log_det
        return z, log_det

    def inverse(self, z):
        """``z_0`` with ``call(z_0)[0] == z``: ``[..., D]``.

        Each step is undone one coordinate at a time in the step's order:
        pass ``k`` solves ``x_k = (y_k - (1 - g_k) m_k) / g_k`` from the
        ``k - 1`` coordinates already solved (``g_k``, ``m_k`` depend on those
        only); the others stay 0, so that no pass feeds MADE unbounded
        values. An inverse costs ``D`` MADE passes per step: training never
        needs it (log q is evaluated at drawn points, see :class:`IAFBijector`).
        """
        positions = np.arange(self.latent_dim)
        for t in reversed(range(self.num_steps)):
            y, x = z, keras.ops.zeros_like(z)
            order = positions[::-1] if self.made_steps[t].reverse else positions
            for d in order:
                m, s = self.made_steps[t](x)
                gate = keras.ops.sigmoid(s + self.gate_bias)
                x = keras.ops.where(positions == d, (y - (1.0 - gate) * m) / gate, x)
            z = x
        return z

    def posterior(self, base: tfd.Distribution) -> tfd.Distribution:
        """The flow's distribution over z: ``base`` (event ``[D]``) pushed through it."""
        return FlowPosterior(distribution=base, bijector=IAFBijector(self))

    def get_config(self):
        return {**super().get_config(), "num_steps": self.num_steps,
                "hidden_units": list(self.hidden_units), "activation": self.activation,
                "gate_bias": self.gate_bias}


def count_parameters(latent_dim: int, num_steps: int, hidden_units: Sequence[int]) -> int:
    """Weights of an :class:`InverseAutoregressiveFlow` (masked-out ones included:
    they are stored), counted without building it."""
    sizes = [latent_dim, *hidden_units, 2 * latent_dim]
    return num_steps * sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def check_flow(flow, latent_dim: int) -> InverseAutoregressiveFlow | None:
    """``flow`` built for ``latent_dim`` (``None`` stays ``None``: no flow).

    Raises:
        ValueError: not an :class:`InverseAutoregressiveFlow`, or built for
            another latent size.
    """
    if flow is None:
        return None
    if not isinstance(flow, InverseAutoregressiveFlow):
        raise ValueError(f"flow must be None or a tfvae.flows.InverseAutoregressiveFlow, got "
                         f"{type(flow).__name__}.")
    flow.build_for(latent_dim)
    return flow


class IAFBijector(tfp.bijectors.Bijector):
    """A TFP bijector running an :class:`InverseAutoregressiveFlow` (its weights
    stay the Keras layer's, trained and saved with the model).

    ``forward`` computes ``z_T`` and the log-determinant in one pass and keeps
    both in TFP's bijector cache (FFJORD's ``BijectorCacheWithGreedyAttrs``):
    ``log_prob`` at a point just drawn by ``sample``/``forward`` then costs no
    further flow pass, and no inverse. At any other point ``inverse`` runs
    :meth:`InverseAutoregressiveFlow.inverse` (``D`` passes per step).
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(forward_name="_augmented_forward",
                                                     inverse_name="_augmented_inverse")

    def __init__(self, flow: InverseAutoregressiveFlow, name: str = "iaf"):
        parameters = dict(locals())
        self.flow = flow
        super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype):
        return {}

    def _augmented_forward(self, x):
        y, log_det = self.flow(x)
        return y, {"fldj": log_det, "ildj": -log_det}

    def _augmented_inverse(self, y):
        x = self.flow.inverse(y)
        _, log_det = self.flow(x)
        return x, {"fldj": log_det, "ildj": -log_det}

    def _forward(self, x):
        return self._augmented_forward(x)[0]

    def _inverse(self, y):
        return self._augmented_inverse(y)[0]

    def _forward_log_det_jacobian(self, x):
        cached = self._cache.forward_attributes(x)
        if "fldj" not in cached:
            cached.update(self._augmented_forward(x)[1])
        return cached["fldj"]

    def _inverse_log_det_jacobian(self, y):
        cached = self._cache.inverse_attributes(y)
        if "ildj" not in cached:
            cached.update(self._augmented_inverse(y)[1])
        return cached["ildj"]


class FlowPosterior(tfd.TransformedDistribution):
    """q(z|x) of an IAF posterior: the base diagonal Gaussian through the flow.

    ``sample`` is reparameterised; ``log_prob`` is the change of variables.
    ``mean()`` is the flow applied to the base mean, ``f(mu)``: E_q[z] has
    no closed form, and ``f(mu)`` is the deterministic code that
    :meth:`tfvae.VAE.reconstruct` and :mod:`tfvae.latent` use as "the
    posterior mean" (it is the exact mean when the flow is affine).
    """

    def _mean(self, **kwargs):
        return self.bijector.forward(self.distribution.mean())
