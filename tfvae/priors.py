"""Priors p(z): small serializable objects that give a TFP distribution over z.

A prior is a Keras layer, like a likelihood: it is built for the latent size,
may own weights (learned priors), and is saved with the model by
``model.save`` through ``get_config``. ``distribution()`` returns p(z) with
batch shape ``[]`` and event shape ``[latent_dim]``.

Add a prior by subclassing :class:`Prior` (register it with
``keras.saving.register_keras_serializable(package="tfvae")``) and naming it
in ``_NAMED`` (and ``config.PRIOR_NAMES``, which the command line lists).

Learned priors (:class:`MixtureOfGaussians`, :class:`VampPrior`) have no
closed-form KL to the Gaussian posterior; they set ``monte_carlo_kl`` and the
VAE uses the Monte-Carlo estimate log q(z|x) - log p(z) for them, without the
warning it gives for an arbitrary :class:`FixedPrior`.
"""

from __future__ import annotations

import math
import weakref

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.config import DEFAULT_PRIOR_COMPONENTS, PRIOR_NAMES
from tfvae.seeds import subset_indices
from tfvae.validation import check_count, check_data

tfd = tfp.distributions

# Floor on a learned prior's standard deviations: keeps log p(z) finite.
MIN_PRIOR_SCALE = 1e-3
# Pseudo-inputs set from data in [low, high] are first pulled this far (as a
# fraction of the interval) inside it: the sigmoid's inverse is infinite at the
# bounds, and its slope there too small for the pseudo-inputs to move.
PSEUDO_INPUT_MARGIN = 0.01


class Prior(keras.layers.Layer):
    """Base class: ``distribution()`` returns p(z) over ``latent_dim`` dimensions.

    ``monte_carlo_kl``: True where no closed-form KL(q || p) exists by design
    (learned mixtures), so that the VAE's Monte-Carlo KL is expected, not a
    fallback worth a warning.
    """

    monte_carlo_kl = False

    def build(self, latent_dim):
        self.latent_dim = int(latent_dim)
        self.built = True

    def build_for(self, latent_dim: int) -> None:
        """Build once for ``latent_dim``; a deserialised prior may be built already."""
        if not self.built:
            self.build(int(latent_dim))
        elif self.latent_dim != int(latent_dim):
            raise ValueError(f"prior was built for latent_dim {self.latent_dim}, not {latent_dim}.")

    def bind(self, model) -> None:
        """Called once by ``VAE.__init__``, before :meth:`build_for`, with the VAE
        itself: a prior that needs the model (the VampPrior: its encoder and data
        shape) takes it here. Does nothing by default."""

    def distribution(self) -> tfd.Distribution:
        raise NotImplementedError

    def log_prob_values(self) -> int:
        """Floats that ``log_prob`` holds per point z (``D``; a mixture of diagonal
        Gaussians the larger of ``K`` and ``D``, see :class:`DiagonalGaussianMixture`):
        what bounds the memory of evaluating it over many samples at once."""
        return self.latent_dim

    def call(self, n):
        return self.distribution().sample(n)


@keras.saving.register_keras_serializable(package="tfvae")
class StandardNormal(Prior):
    """p(z) = N(0, I), the prior of Kingma & Welling; KL to q(z|x) in closed form."""

    def distribution(self) -> tfd.Distribution:
        return standard_normal_prior(self.latent_dim)


class FixedPrior(Prior):
    """Any TFP distribution with event shape ``[latent_dim]``, as given.

    Not serializable: ``model.save`` of a VAE with such a prior raises (save
    the weights and rebuild the model with the same prior instead).
    """

    serializable = False

    def __init__(self, distribution: tfd.Distribution, **kwargs):
        super().__init__(**kwargs)
        self._distribution = distribution

    def build(self, latent_dim):
        super().build(latent_dim)
        shape = (tuple(self._distribution.batch_shape), tuple(self._distribution.event_shape))
        if shape != ((), (self.latent_dim,)):
            raise ValueError(
                f"prior has batch shape {list(shape[0])} and event shape {list(shape[1])}; "
                f"expected batch shape [] and event shape [{self.latent_dim}] (latent_dim)."
            )

    def distribution(self) -> tfd.Distribution:
        return self._distribution


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


class DiagonalGaussianMixture(tfd.MixtureSameFamily):
    """A mixture of diagonal Gaussians (components with batch shape ``[K]`` and event
    ``[D]``, e.g. ``MultivariateNormalDiag``) whose log-density takes two matrix products.

    TFP's ``MixtureSameFamily`` evaluates every component at every point, a
    ``[..., K, D]`` tensor; expanding ``(z - mu_k)^2 / sigma_k^2`` gives the same
    ``[..., K]`` log-densities from ``z^2 @ (1 / sigma^2)^T`` and ``z @ (mu /
    sigma^2)^T`` without it (the VampPrior's log-likelihood: 5,000 draws times 500
    components per image). Both are shifted by the components' mean location
    first, which keeps the float32 rounding of the expanded square small.
    Sampling, mean and the rest are ``MixtureSameFamily``'s, and so is ``__init__``
    (TFP rebuilds a distribution from its constructor's parameters). The components
    need ``mean()`` and ``stddev()`` of shape ``[K, D]``: any diagonal Gaussian.
    """

    def _per_mixture_component_log_prob(self, x):
        components = self.components_distribution
        loc, scale = components.mean(), components.stddev()  # [K, D] each
        centre = tf.reduce_mean(loc, axis=0)  # [D]
        x = tf.convert_to_tensor(x, loc.dtype) - centre  # [..., D]
        loc = loc - centre
        precision = tf.math.reciprocal(tf.square(scale))  # [K, D]
        squared_distance = (tf.einsum("...d,kd->...k", tf.square(x), precision)
                            - 2.0 * tf.einsum("...d,kd->...k", x, loc * precision)
                            + tf.reduce_sum(tf.square(loc) * precision, axis=-1))  # [..., K]
        dimensions = tf.cast(tf.shape(loc)[-1], loc.dtype)
        log_normaliser = (tf.reduce_sum(tf.math.log(scale), axis=-1)
                          + 0.5 * dimensions * math.log(2 * math.pi))  # [K]
        log_weights = tf.math.log_softmax(self.mixture_distribution.logits_parameter(), axis=-1)
        # rounding can take a sum of squares a little below zero
        return log_weights - log_normaliser - 0.5 * tf.maximum(squared_distance, 0.0)


def gaussian_mixture(logits, components: tfd.Distribution) -> tfd.Distribution:
    """The mixture of ``components`` (batch ``[K]``) with weights ``softmax(logits)``:
    a :class:`DiagonalGaussianMixture` for diagonal Gaussians, else TFP's
    ``MixtureSameFamily`` (e.g. a VampPrior over an IAF posterior)."""
    mixture = (DiagonalGaussianMixture if isinstance(components, tfd.MultivariateNormalDiag)
               else tfd.MixtureSameFamily)
    return mixture(tfd.Categorical(logits=logits), components)


@keras.saving.register_keras_serializable(package="tfvae")
class MixtureOfGaussians(Prior):
    """p(z) = sum_k pi_k N(z; mu_k, diag sigma_k^2), K components, all learned.

    Weights (trained and saved with the model): ``logits`` ``[K]`` (pi =
    softmax(logits), starting equal), ``means`` ``[K, D]`` (starting as
    N(0, 1) draws from ``seed``, so the components start apart) and
    ``raw_scales`` ``[K, D]`` (sigma = softplus(raw) + ``MIN_PRIOR_SCALE``,
    starting at 1).

    Args:
        num_components: K >= 1.
        seed: seed of the initial means.
    """

    monte_carlo_kl = True

    def __init__(self, num_components: int = DEFAULT_PRIOR_COMPONENTS, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.num_components = check_count(num_components, "num_components")
        self.seed = check_count(seed, "seed", low=0)

    def build(self, latent_dim):
        super().build(latent_dim)
        shape = (self.num_components, self.latent_dim)
        self.logits = self.add_weight(name="logits", shape=(self.num_components,),
                                      dtype="float32", initializer="zeros", autocast=False)
        self.means = self.add_weight(
            name="means", shape=shape, dtype="float32", autocast=False,
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed))
        self.raw_scales = self.add_weight(
            name="raw_scales", shape=shape, dtype="float32", autocast=False,
            initializer=keras.initializers.Constant(_inverse_softplus(1.0 - MIN_PRIOR_SCALE)))

    def stddevs(self) -> tf.Tensor:
        """The components' standard deviations, ``[K, D]``."""
        return tf.nn.softplus(tf.convert_to_tensor(self.raw_scales)) + MIN_PRIOR_SCALE

    def distribution(self) -> tfd.Distribution:
        components = tfd.MultivariateNormalDiag(loc=tf.convert_to_tensor(self.means),
                                                scale_diag=self.stddevs())
        return gaussian_mixture(tf.convert_to_tensor(self.logits), components)

    def log_prob_values(self) -> int:
        return max(self.num_components, self.latent_dim)  # [K] densities of a [D] point

    def get_config(self):
        config = super().get_config()
        config.update(num_components=self.num_components, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="tfvae")
class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k).

    The average of the VAE's own posterior at K learned pseudo-inputs u_k of
    the data's shape, passed through its encoder (so the prior is trained with
    the encoder, and the encoder's weights serve both). The VAE gives itself
    to :meth:`bind`; the pseudo-inputs are created there.

    Pseudo-inputs stay valid encoder inputs by construction: u = low + (high -
    low) * sigmoid(raw) for a likelihood with support [low, high] ([0, 1] for
    pixels), u = raw for an unbounded one, with ``raw_pseudo_inputs``
    ``[K, *data_shape]`` the trained (and saved) weight, starting as N(0, 1)
    draws from ``seed``. The sigmoid rather than the paper's hard-tanh: a
    clipped pseudo-input value has zero gradient and would stay at the bound,
    while the sigmoid keeps every value movable. :meth:`initialize_from` starts
    them at training examples instead.

    The encoder is run on the pseudo-inputs in inference mode
    (``training=False``) each time p(z) is evaluated.

    A conditional VAE is refused: its encoder q(z|x,y) needs a label per
    pseudo-input, and p(z) is the same for every class.

    Args:
        num_components: K >= 1, the number of pseudo-inputs.
        seed: seed of the initial pseudo-inputs.
    """

    monte_carlo_kl = True

    def __init__(self, num_components: int = DEFAULT_PRIOR_COMPONENTS, seed: int = 0,
                 data_shape: tuple[int, ...] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_components = check_count(num_components, "num_components")
        self.seed = check_count(seed, "seed", low=0)
        # Known from the VAE (bind) or, for a saved prior, from its config.
        self.data_shape = None if data_shape is None else tuple(int(d) for d in data_shape)
        self._model = None  # a weak reference: the VAE owns this prior, not the reverse

    def bind(self, model) -> None:
        if getattr(model, "num_classes", None) is not None:
            raise ValueError(
                f"VampPrior needs an encoder of x alone, q(z|x); this VAE is conditional "
                f"(num_classes={model.num_classes}), its encoder q(z|x,y) also takes a label. "
                f"Expected an unconditional VAE, or the prior 'mog' or 'standard_normal'.")
        if self._model is not None and self._model() is not model:
            raise ValueError("this VampPrior is bound to another VAE already; expected a new "
                             "VampPrior for each VAE (they share no pseudo-inputs).")
        if self.data_shape is not None and self.data_shape != tuple(model.data_shape):
            raise ValueError(f"VampPrior has pseudo-inputs of shape {self.data_shape}; expected "
                             f"the VAE's data shape {tuple(model.data_shape)}.")
        low, high = model.likelihood.support
        if (low is None) != (high is None):
            raise ValueError(f"VampPrior needs data bounded on both sides or unbounded; the "
                             f"likelihood's support is [{low}, {high}].")
        self.support = (low, high)
        self.data_shape = tuple(model.data_shape)
        self._model = weakref.ref(model)

    def build(self, latent_dim):
        super().build(latent_dim)
        if self.data_shape is None:
            raise ValueError("VampPrior does not know the data shape yet; expected it to be "
                             "given to a VAE (VAE(..., prior=VampPrior(K))), which binds it.")
        self.raw_pseudo_inputs = self.add_weight(
            name="raw_pseudo_inputs", shape=(self.num_components, *self.data_shape),
            dtype="float32", autocast=False,
            initializer=keras.initializers.RandomNormal(stddev=1.0, seed=self.seed))

    def _bound_model(self):
        model = None if self._model is None else self._model()
        if model is None:
            raise ValueError("VampPrior is not bound to a VAE; expected it to be given as a "
                             "VAE's prior (VAE(..., prior=VampPrior(K))) before use.")
        return model

    def pseudo_inputs(self) -> tf.Tensor:
        """u, ``[K, *data_shape]``, inside the likelihood's support."""
        self._bound_model()
        raw = tf.convert_to_tensor(self.raw_pseudo_inputs)
        low, high = self.support
        return raw if low is None else low + (high - low) * tf.sigmoid(raw)

    def distribution(self) -> tfd.Distribution:
        q = self._bound_model().posterior(self.pseudo_inputs())  # batch [K], event [D]
        return gaussian_mixture(tf.zeros([self.num_components]), q)

    def log_prob_values(self) -> int:
        if self._bound_model().flow is None:
            return max(self.num_components, self.latent_dim)  # a DiagonalGaussianMixture
        return self.num_components * self.latent_dim  # MixtureSameFamily of flows

    def initialize_from(self, x, seed: int = 0) -> None:
        """Set the pseudo-inputs to K examples of ``x`` ``[N, *data_shape]``, N >= K
        (a fixed random subset from ``seed``; values of bounded data are pulled
        ``PSEUDO_INPUT_MARGIN`` of the interval inside it)."""
        model = self._bound_model()
        check_data(x, self.data_shape, model.likelihood.support, "x")
        x = np.asarray(x, np.float64)
        if len(x) < self.num_components:
            raise ValueError(f"x has {len(x)} examples; expected at least num_components="
                             f"{self.num_components}, one per pseudo-input.")
        chosen = subset_indices(len(x), self.num_components, seed)
        u = x if chosen is None else x[chosen]
        low, high = self.support
        if low is not None:
            p = np.clip((u - low) / (high - low), PSEUDO_INPUT_MARGIN, 1 - PSEUDO_INPUT_MARGIN)
            u = np.log(p) - np.log1p(-p)  # the sigmoid's inverse
        self.raw_pseudo_inputs.assign(u.astype(np.float32))

    def get_config(self):
        config = super().get_config()
        config.update(num_components=self.num_components, seed=self.seed,
                      data_shape=None if self.data_shape is None else list(self.data_shape))
        return config


def standard_normal_prior(latent_dim: int) -> tfd.Distribution:
    """N(0, I) over ``latent_dim`` dimensions (event shape ``[D]``)."""
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim]), scale_diag=tf.ones([latent_dim]))


_NAMED = {"standard_normal": StandardNormal, "mog": MixtureOfGaussians,
          "mixture": MixtureOfGaussians, "vamp": VampPrior}
# Names that take a component count.
_MIXTURES = ("mog", "mixture", "vamp")


def get_prior(spec: str | Prior | tfd.Distribution | None,
              num_components: int | None = None) -> Prior:
    """A :class:`Prior` from a name, an instance, a TFP distribution, or None (standard Normal).

    Names: ``"standard_normal"``, ``"mog"`` (or ``"mixture"``):
    :class:`MixtureOfGaussians`, ``"vamp"``: :class:`VampPrior`; these two
    with ``num_components`` (default ``DEFAULT_PRIOR_COMPONENTS``), which the
    other specs ignore.
    """
    if spec is None:
        return StandardNormal()
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, tfd.Distribution):
        return FixedPrior(spec)
    name = spec.strip().lower() if isinstance(spec, str) else None
    if name in _MIXTURES:
        return _NAMED[name](DEFAULT_PRIOR_COMPONENTS if num_components is None
                            else check_count(num_components, "num_components"))
    if name in _NAMED:
        return _NAMED[name]()
    raise ValueError(
        f"Unknown prior {spec!r}. Expected one of {', '.join(PRIOR_NAMES)}, a tfvae.priors.Prior "
        f"or a TFP distribution with event shape [latent_dim]."
    )
