"""Priors p(z): small serializable objects that give a TFP distribution over z.

A prior is a Keras layer, like a likelihood: it is built for the latent size,
may own weights (learned priors), and is saved with the model by
``model.save`` through ``get_config``. ``distribution()`` returns p(z) with
batch shape ``[]`` and event shape ``[latent_dim]``.

Add a prior by subclassing :class:`Prior` (register it with
``keras.saving.register_keras_serializable(package="tfvae")``) and naming it
in ``_NAMED`` if it needs no arguments.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


class Prior(keras.layers.Layer):
    """Base class: ``distribution()`` returns p(z) over ``latent_dim`` dimensions."""

    def build(self, latent_dim):
        self.latent_dim = int(latent_dim)
        self.built = True

    def build_for(self, latent_dim: int) -> None:
        """Build once for ``latent_dim``; a deserialised prior may be built already."""
        if not self.built:
            self.build(int(latent_dim))
        elif self.latent_dim != int(latent_dim):
            raise ValueError(f"prior was built for latent_dim {self.latent_dim}, not {latent_dim}.")

    def distribution(self) -> tfd.Distribution:
        raise NotImplementedError

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


def standard_normal_prior(latent_dim: int) -> tfd.Distribution:
    """N(0, I) over ``latent_dim`` dimensions (event shape ``[D]``)."""
    return tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim]), scale_diag=tf.ones([latent_dim]))


_NAMED = {"standard_normal": StandardNormal}
PRIOR_NAMES = tuple(_NAMED)


def get_prior(spec: str | Prior | tfd.Distribution | None) -> Prior:
    """A :class:`Prior` from a name, an instance, a TFP distribution, or None (standard Normal)."""
    if spec is None:
        return StandardNormal()
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, tfd.Distribution):
        return FixedPrior(spec)
    if isinstance(spec, str) and spec.strip().lower() in _NAMED:
        return _NAMED[spec.strip().lower()]()
    raise ValueError(
        f"Unknown prior {spec!r}. Expected one of {', '.join(PRIOR_NAMES)}, a tfvae.priors.Prior "
        f"or a TFP distribution with event shape [latent_dim]."
    )
