"""Importance-weighted bounds and log-likelihood estimates (Burda et al. 2015).

With K samples z_k ~ q(z|x) and weights w_k = p(x|z_k) p(z_k) / q(z_k|x),

    L_K = log (1/K) sum_k w_k  <=  log p(x),

L_1 is the ELBO, E[L_K] rises with K and tends to log p(x). All values are
nats per example.
"""

from __future__ import annotations

import math
import weakref
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.flows import FlowPosterior
from tfvae.seeds import stateless_seed
from tfvae.validation import check_count

tfd = tfp.distributions

# Largest number of decoder outputs (K_chunk * B * prod(data_shape) floats)
# held at once when estimating log p(x): 2**22 floats = 16 MiB per tensor,
# small enough to stay in a CPU's last-level cache (larger chunks ran slower:
# benchmarks/README.md).
MAX_DECODED_VALUES = 2**22


def sample_posterior(q: tfd.Distribution, num_samples: int, seed) -> tf.Tensor:
    """``num_samples`` draws z ~ q(z|x): ``[K, B, D]``.

    A diagonal Gaussian is sampled as ``loc + scale * eps`` with ``eps`` from
    ``tf.random.stateless_normal(..., alg="philox")``: under XLA on a CPU the
    default algorithm is many times slower (benchmarks/README.md), for the
    same numbers. A flow posterior draws its base Gaussian so and applies
    the flow, which caches each draw's log-determinant: ``q.log_prob`` of
    the draws then costs no further flow pass. Other posteriors use ``q.sample``.
    """
    if isinstance(q, FlowPosterior):
        return q.bijector.forward(sample_posterior(q.distribution, num_samples, seed))
    if isinstance(q, tfd.MultivariateNormalDiag):
        loc = q.loc
        shape = tf.concat([[num_samples], tf.shape(loc)], axis=0)
        eps = tf.random.stateless_normal(shape, seed=seed, alg="philox")
        return loc + q.scale.diag * eps
    return q.sample(num_samples, seed=seed)


class WeightTerms(NamedTuple):
    """The parts of the log importance weights of ``K`` draws per example."""

    q: tfd.Distribution  # q(z|x), batch shape [B]
    z: tf.Tensor  # [K, B, D] reparameterised draws (gradients flow through them)
    log_px_given_z: tf.Tensor  # [K, B]
    log_pz: tf.Tensor  # [K, B]
    log_qz: tf.Tensor  # [K, B]

    @property
    def log_weights(self) -> tf.Tensor:
        """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x): ``[K, B]``."""
        return self.log_px_given_z + self.log_pz - self.log_qz


def weight_terms(model, x, num_samples: int, seed, y=None, training: bool = False
                 ) -> WeightTerms:
    """``num_samples`` draws per example and their log-density terms (``y``:
    the labels of a conditional VAE; ``training``: passed to the networks)."""
    q = (model.posterior(x, y, training=training) if y is not None
         else model.posterior(x, training=training))
    z = sample_posterior(q, num_samples, seed)  # [K, B, D]
    p = (model.decode(z, y, training=training) if y is not None
         else model.decode(z, training=training))
    # x broadcasts over K.
    return WeightTerms(q, z, p.log_prob(x), model.prior.log_prob(z), q.log_prob(z))


def log_weights(model, x, num_samples: int, seed, y=None) -> tf.Tensor:
    """log w_k for ``num_samples`` draws per example: ``[K, B]`` (``y``: the
    labels of a conditional VAE)."""
    return weight_terms(model, x, num_samples, seed, y).log_weights


def iw_bound(model, x, num_samples: int, seed, y=None) -> tf.Tensor:
    """The importance-weighted bound L_K per example, ``[B]``."""
    lw = log_weights(model, x, num_samples, seed, y)
    return tf.reduce_logsumexp(lw, axis=0) - math.log(num_samples)


# One compiled function per model, so that repeated calls (e.g. for several K)
# reuse its traces instead of compiling again.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _chunk_logsumexp(model):
    """A compiled function ``run(x, num_samples, seed, y=None)``: logsumexp
    over one chunk of samples, ``[B]`` (``y``: a conditional VAE's labels)."""
    if model not in _COMPILED:

        @tf.function(jit_compile=True, reduce_retracing=True)
        def run(x, num_samples, seed, y=None):
            return tf.reduce_logsumexp(log_weights(model, x, num_samples, seed, y), axis=0)

        _COMPILED[model] = run
    return _COMPILED[model]


def default_samples_per_chunk(model, batch_size: int) -> int:
    """Samples per compiled chunk such that at most ``MAX_DECODED_VALUES`` floats of
    the largest per-sample tensor exist at once: the decoder's outputs, or a
    mixture prior's ``[K, D]`` log-densities where those are larger."""
    per_example = max(math.prod(model.data_shape), model.latent_prior.log_prob_values())
    return max(1, MAX_DECODED_VALUES // (batch_size * per_example))


def log_likelihood(model, x, num_samples: int = 5000, batch_size: int = 100,
                   samples_per_chunk: int | None = None, seed: int | None = 0,
                   verbose: int = 1, y=None) -> np.ndarray:
    """Estimate log p(x) per example by importance sampling with q(z|x)
    (a conditional VAE with labels ``y``: log p(x|y), sampling q(z|x,y)).

    Samples are drawn in chunks so that memory stays bounded: at most
    ``samples_per_chunk * batch_size * prod(data_shape)`` decoder outputs
    (by default chosen to be at most ``MAX_DECODED_VALUES`` = 2**22 floats,
    16 MiB, counting a mixture prior's log-densities too: see
    :func:`default_samples_per_chunk`) exist at once, whatever ``num_samples``
    is. Chunks are combined exactly with logsumexp, so the result does not depend on the chunking
    beyond the random draws.

    Args:
        model: a :class:`tfvae.VAE`.
        x: ``[N, *data_shape]`` float array.
        num_samples: K, importance samples per example (5000 in Burda et al.).
        batch_size: examples per step.
        samples_per_chunk: samples per compiled call (default from the bound).
        seed: int for a reproducible estimate.
        verbose: 1 shows a progress bar.
        y: int labels ``[N]`` of a conditional VAE (checked by the caller,
            :meth:`tfvae.VAE.log_likelihood`), else ``None``.

    Returns:
        ``[N]`` float64 array of log p(x) (conditional: log p(x|y)) estimates in nats.

    Raises:
        ValueError: a count that is not an integer >= 1, or an empty ``x``.
    """
    num_samples = check_count(num_samples, "num_samples")
    batch_size = check_count(batch_size, "batch_size")
    if samples_per_chunk is not None:
        samples_per_chunk = check_count(samples_per_chunk, "samples_per_chunk")
    x = np.asarray(x, dtype=np.float32)
    y = None if y is None else np.asarray(y, dtype=np.int32)
    if len(x) == 0:
        raise ValueError(f"x is empty (shape {x.shape}); expected at least one example.")
    if samples_per_chunk is None:
        samples_per_chunk = default_samples_per_chunk(model, batch_size)
    samples_per_chunk = min(samples_per_chunk, num_samples)
    run = _chunk_logsumexp(model)
    seed = stateless_seed(seed)
    n_batches = math.ceil(len(x) / batch_size)
    progress = keras.utils.Progbar(n_batches, verbose=verbose, unit_name="batch")
    results = []
    for b in range(n_batches):
        batch = tf.constant(x[b * batch_size:(b + 1) * batch_size])
        labels = None if y is None else tf.constant(y[b * batch_size:(b + 1) * batch_size],
                                                    tf.int32)
        partial = []
        done = 0
        while done < num_samples:
            k = min(samples_per_chunk, num_samples - done)
            seed, chunk_seed = tfp.random.split_seed(seed)
            partial.append(run(batch, k, chunk_seed, labels))
            done += k
        total = tf.reduce_logsumexp(tf.stack(partial), axis=0) - math.log(num_samples)
        results.append(total.numpy().astype(np.float64))
        progress.update(b + 1)
    return np.concatenate(results)
