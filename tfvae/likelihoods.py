"""Observation models p(x|z): turn decoder outputs into TFP distributions.

A likelihood is a small Keras layer. It owns any parameters of its own (the
learned scale of a Normal), knows its support (so bad input can be rejected
before training) and builds ``tfd.Independent`` distributions whose event
shape is the data shape. The decoder always emits one real number per data
value (``decoder(z).shape == [B, *data_shape]``): logits for the Bernoulli
family, the mean for the Normal.
"""

from __future__ import annotations

import importlib
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.validation import check_number

tfd = tfp.distributions

# Smallest standard deviation a learned Normal scale may take, so that
# log-probabilities stay finite when the decoder becomes very confident.
MIN_SCALE = 1e-3


class Likelihood(keras.layers.Layer):
    """Base class: ``distribution(params)`` returns p(x|z).

    Subclasses set ``support`` to ``(low, high)`` (``None`` for unbounded)
    and implement ``_base_distribution(params)``.
    """

    support: tuple[float | None, float | None] = (None, None)

    def build(self, data_shape):
        self.data_shape = tuple(int(d) for d in data_shape)
        self.built = True

    def build_for(self, data_shape) -> None:
        """Build once for ``data_shape``; a deserialised layer may be built already."""
        data_shape = tuple(int(d) for d in data_shape)
        if not self.built:
            self.build(data_shape)
        elif self.data_shape != data_shape:
            raise ValueError(
                f"likelihood was built for data shape {self.data_shape}, not {data_shape}."
            )

    def distribution(self, params: tf.Tensor) -> tfd.Distribution:
        """p(x|z) with batch shape ``params.shape[:-len(data_shape)]``.

        Args:
            params: decoder output, shape ``[..., *data_shape]``. It is cast to
                float32 so that log-probabilities stay float32 under mixed
                precision.
        """
        params = tf.cast(params, tf.float32)
        ndims = len(self.data_shape)
        return tfd.Independent(
            self._base_distribution(params), reinterpreted_batch_ndims=ndims
        )

    def mean_image(self, params: tf.Tensor) -> tf.Tensor:
        """E[x|z], shape ``[..., *data_shape]`` (what people plot)."""
        return self.distribution(params).mean()

    def _base_distribution(self, params):
        raise NotImplementedError

    def call(self, params):
        return self.mean_image(params)


@keras.saving.register_keras_serializable(package="tfvae")
class Bernoulli(Likelihood):
    """Bernoulli pixels from logits. log p(x|z) = -binary cross-entropy.

    Also accepted for grey values in [0, 1] (the common "Bernoulli on grey
    pixels" shortcut), which is not a normalised density there; see
    :class:`ContinuousBernoulli` for the normalised version.
    """

    support = (0.0, 1.0)

    def _base_distribution(self, params):
        return BernoulliLogits(logits=params, dtype=tf.float32)


@tf.custom_gradient
def bernoulli_log_prob(x: tf.Tensor, logits: tf.Tensor):
    """log p(x) of a Bernoulli with these logits, per value, for x in [0, 1];
    ``x`` and ``logits`` broadcast against each other.

    Value: ``x * l - softplus(l)``, written as in
    ``tf.nn.sigmoid_cross_entropy_with_logits`` so that nothing overflows.
    Gradient w.r.t. the logits: ``x - sigmoid(l)``, written out because
    autodiff of the element-wise ops that compute the value makes many passes
    over a [B, 784] tensor (speed-up measured in ``benchmarks/README.md``).
    """
    value = logits * x - tf.nn.relu(logits) - tf.math.log1p(tf.exp(-tf.abs(logits)))

    def gradient(upstream):
        return (_sum_to_shape(upstream * logits, tf.shape(x)),
                _sum_to_shape(upstream * (x - tf.sigmoid(logits)), tf.shape(logits)))

    return value, gradient


def _sum_to_shape(gradient: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """Sum a gradient over the axes along which its input was broadcast."""
    axes, _ = tf.raw_ops.BroadcastGradientArgs(s0=shape, s1=tf.shape(gradient))
    return tf.reshape(tf.reduce_sum(gradient, axes), shape)


class BernoulliLogits(tfd.Bernoulli):
    """``tfd.Bernoulli`` whose ``log_prob`` is :func:`bernoulli_log_prob`
    (same values, one hand-written gradient); float ``dtype`` only."""

    def _log_prob(self, event):
        logits = self._logits_parameter_no_checks()
        return bernoulli_log_prob(tf.cast(event, logits.dtype), logits)


@keras.saving.register_keras_serializable(package="tfvae")
class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham 2019) for x in [0, 1]."""

    support = (0.0, 1.0)

    def _base_distribution(self, params):
        return tfd.ContinuousBernoulli(logits=params)


@keras.saving.register_keras_serializable(package="tfvae")
class Normal(Likelihood):
    """Gaussian pixels with mean from the decoder.

    Args:
        scale: a positive float for a fixed standard deviation (then
            log p(x|z) = -||x - mu||^2 / (2 scale^2) - const, i.e. MSE), or
            ``"learned"`` for a trained standard deviation.
        per_pixel: with ``scale="learned"``, learn one scale per data value
            instead of one global scale.
        init_scale: starting value of a learned scale.
        mean: ``"identity"`` (the decoder output is the mean) or ``"sigmoid"``
            (the mean is ``sigmoid(decoder output)``, in (0, 1), as for
            Kingma & Welling's Frey Face decoder).
    """

    MEANS = ("identity", "sigmoid")

    def __init__(self, scale: float | str = "learned", per_pixel: bool = False,
                 init_scale: float = 0.1, mean: str = "identity", **kwargs):
        super().__init__(**kwargs)
        if mean not in self.MEANS:
            raise ValueError(f"Normal mean must be one of {', '.join(self.MEANS)}, got {mean!r}.")
        if isinstance(scale, str):
            if scale != "learned":
                raise ValueError(
                    f"Normal scale must be a positive number or 'learned', got {scale!r}."
                )
        else:
            scale = check_number(scale, "Normal scale", low=0.0, strict=True)
        if per_pixel and scale != "learned":
            raise ValueError("per_pixel=True needs scale='learned'.")
        self.scale = scale
        self.per_pixel = bool(per_pixel)
        self.init_scale = check_number(init_scale, "Normal init_scale", low=0.0, strict=True)
        self.mean = mean

    @property
    def learned(self) -> bool:
        return self.scale == "learned"

    def build(self, data_shape):
        super().build(data_shape)
        if self.learned:
            shape = self.data_shape if self.per_pixel else ()
            # softplus^{-1}(init - floor): the scale starts at init_scale.
            raw = math.log(math.expm1(max(self.init_scale - MIN_SCALE, 1e-6)))
            self.raw_scale = self.add_weight(
                name="raw_scale", shape=shape, dtype="float32",
                initializer=keras.initializers.Constant(raw), autocast=False,
            )

    def stddev(self) -> tf.Tensor:
        """The standard deviation: a scalar, or ``data_shape`` when per pixel."""
        if self.learned:
            return tf.nn.softplus(tf.convert_to_tensor(self.raw_scale)) + MIN_SCALE
        return tf.constant(self.scale, tf.float32)

    def _base_distribution(self, params):
        loc = tf.sigmoid(params) if self.mean == "sigmoid" else params
        return tfd.Normal(loc=loc, scale=self.stddev())

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, per_pixel=self.per_pixel, init_scale=self.init_scale,
                      mean=self.mean)
        return config


def _pixelcnn(**kwargs) -> Likelihood:
    """The PixelVAE's p(x|z), imported on use: tfvae.pixelvae imports this module."""
    return importlib.import_module("tfvae.pixelvae").PixelCNNBernoulli(**kwargs)


_NAMED = {
    "bernoulli": lambda: Bernoulli(),
    "continuous_bernoulli": lambda: ContinuousBernoulli(),
    "normal": lambda: Normal(scale="learned"),
    "normal_per_pixel": lambda: Normal(scale="learned", per_pixel=True),
    "normal_sigmoid": lambda: Normal(scale="learned", mean="sigmoid"),
    "pixelcnn": _pixelcnn,
}
LIKELIHOOD_NAMES = (*_NAMED, "normal:<scale>", "normal_sigmoid:<scale>", "pixelcnn:<layers>")


def get_likelihood(spec: str | Likelihood) -> Likelihood:
    """A :class:`Likelihood` from a name or an instance.

    Names: ``"bernoulli"``, ``"continuous_bernoulli"``, ``"normal"`` (learned
    global scale), ``"normal_per_pixel"`` (learned scale per value),
    ``"normal:0.1"`` (fixed standard deviation 0.1), and ``"normal_sigmoid"``,
    ``"normal_sigmoid:0.1"``: the same with mean ``sigmoid(decoder output)``;
    ``"pixelcnn"``: :class:`tfvae.pixelvae.PixelCNNBernoulli` with its defaults,
    ``"pixelcnn:1"``: the same with 1 gated layer (a weaker decoder).
    """
    if isinstance(spec, Likelihood):
        return spec
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name in _NAMED:
            return _NAMED[name]()
        prefix, _, value = name.partition(":")
        if value and prefix in ("normal", "normal_sigmoid"):
            try:
                scale = float(value)
            except ValueError:
                scale = None
            if scale is not None and scale > 0 and math.isfinite(scale):
                mean = "sigmoid" if prefix == "normal_sigmoid" else "identity"
                return Normal(scale=scale, mean=mean)
        if prefix == "pixelcnn" and value.isdigit() and int(value) >= 1:
            return _pixelcnn(num_layers=int(value))
    raise ValueError(
        f"Unknown likelihood {spec!r}. Expected one of {', '.join(LIKELIHOOD_NAMES)} "
        "or a tfvae.likelihoods.Likelihood instance."
    )
