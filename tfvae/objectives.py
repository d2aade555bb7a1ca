"""Training objectives beside the ELBO: the importance-weighted bound (IWAE, DReG) and free bits.

Shapes: ``B`` examples, ``K`` importance samples, ``D = latent_dim``. All values
are nats per example.

* ``"iwae"`` (Burda et al. 2015): maximise L_K = log (1/K) sum_k w_k with
  w_k = p(x, z_k) / q(z_k|x), z_k ~ q(z|x) reparameterised; the weights come
  from :func:`tfvae.importance.weight_terms`, the same as evaluation uses.
* ``"dreg"`` (Tucker et al. 2018): the same bound; the decoder's (and the
  prior's) gradient is IWAE's, the encoder's is the doubly reparameterised
  one, sum_k w~_k^2 d log w_k / dz_k dz_k/dphi with w~ the normalised weights,
  i.e. without the score term of log q(z|x) (q's parameters stopped there).
* free bits (Kingma et al. 2016): the ELBO's KL replaced by
  sum_d max(lambda, KL_d), KL_d the batch mean of dimension d's KL, so that no
  dimension is pushed below lambda nats.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import importance
from tfvae.validation import check_count

tfd = tfp.distributions

OBJECTIVES = ("elbo", "iwae", "dreg")


def check_objective(objective: str, k: int) -> tuple[str, int]:
    """``(objective, k)`` after checking them.

    Raises:
        ValueError: an unknown objective, ``k`` not an integer >= 1, or
            ``k > 1`` with ``"elbo"`` (which draws one sample).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}. Expected one of "
                         f"{', '.join(OBJECTIVES)}.")
    k = check_count(k, "k", low=1)
    if objective == "elbo" and k > 1:
        raise ValueError(f"k={k} importance samples need objective 'iwae' or 'dreg'; the "
                         f"objective 'elbo' draws one sample (expected k=1).")
    return objective, k


class IWTerms(NamedTuple):
    """One batch's importance-weighted objective and the first sample's ELBO terms."""

    bound: tf.Tensor  # [B], L_K
    reconstruction: tf.Tensor  # [B], -log p(x|z_1)
    kl: tf.Tensor  # [B], KL(q || p) (closed form, or log q(z_1) - log p(z_1))
    z: tf.Tensor  # [K, B, D], the draws
    encoder_loss: tf.Tensor | None  # scalar DReG surrogate of the encoder (dreg only)


def importance_weighted_terms(model, x, y, k: int, seed, training: bool = False,
                              dreg: bool = False) -> IWTerms:
    """L_K of ``model`` for a batch ``x`` (conditional: labels ``y``) from ``k``
    draws per example, and with ``dreg`` the encoder's DReG surrogate loss."""
    terms = importance.weight_terms(model, x, k, seed, y, training=training)
    log_w = terms.log_weights  # [K, B]
    bound = tf.reduce_logsumexp(log_w, axis=0) - math.log(k)
    encoder_loss = dreg_encoder_loss(model, terms) if dreg else None
    # The Monte-Carlo KL from the terms already computed (recomputing log q at a slice of z
    # would miss a flow's cache and invert the flow).
    kl = (model.kl_divergence(terms.q, terms.z[0]) if model.analytic_kl
          else terms.log_qz[0] - terms.log_pz[0])
    return IWTerms(bound, -terms.log_px_given_z[0], kl, terms.z, encoder_loss)


def dreg_encoder_loss(model, terms: importance.WeightTerms) -> tf.Tensor:
    """A scalar whose gradient for q's variables is DReG's (minus the bound's gradient).

    ``path`` has the value of log w and its gradient only through z: the
    score term of log q (q's parameters at fixed z) and any direct
    dependence of log p(z) on the encoder (a VampPrior) are subtracted at a
    stopped copy of z. The direct prior term keeps IWAE's weights w~, the
    path term takes w~^2 (Tucker et al. 2018, eq. 7). Mean over the batch.
    """
    stopped = tf.stop_gradient(terms.z)
    score = terms.q.log_prob(stopped)  # gradient: q's parameters only
    prior_direct = model.prior.log_prob(stopped)  # gradient: the prior's parameters only
    log_w = terms.log_weights
    path = log_w - prior_direct + score
    weights = tf.stop_gradient(tf.nn.softmax(log_w, axis=0))  # w~, [K, B]
    return -tf.reduce_mean(tf.reduce_sum(weights**2 * path + weights * prior_direct, axis=0))


def dreg_gradients(tape: tf.GradientTape, loss: tf.Tensor, encoder_loss: tf.Tensor,
                   z: tf.Tensor, variables: list) -> list:
    """Gradients of ``variables`` for DReG: the variables that the draws ``z``
    depend on (the encoder, a flow) take ``encoder_loss``'s, the others
    (decoder, prior) ``loss``'s. ``tape`` must be persistent."""
    through_z = tape.gradient(z, variables)  # None where z does not depend on it
    of_loss = tape.gradient(loss, variables)
    of_encoder = tape.gradient(encoder_loss, variables)
    return [e if dz is not None else g for dz, g, e in zip(through_z, of_loss, of_encoder)]


# ----------------------------------------------------------------- free bits
def _is_factorised_gaussian(distribution: tfd.Distribution) -> bool:
    if isinstance(distribution, tfd.MultivariateNormalDiag):
        return True
    return (isinstance(distribution, tfd.Independent)
            and isinstance(distribution.distribution, tfd.Normal)
            and distribution.reinterpreted_batch_ndims == 1)


def check_free_bits_prior(prior: tfd.Distribution) -> None:
    """Raise ``ValueError`` unless each latent dimension's KL to ``prior`` has a closed form."""
    if not _is_factorised_gaussian(prior):
        raise ValueError(
            f"free_bits needs each latent dimension's KL in closed form, i.e. a factorised "
            f"Gaussian prior such as 'standard_normal'; this VAE's prior is "
            f"{type(prior).__name__}. Use free_bits=0 with this prior.")


def per_dimension_kl(q: tfd.Distribution, prior: tfd.Distribution) -> tf.Tensor:
    """KL(q_d || p_d) of each latent dimension, ``[B, D]`` nats (closed form).

    Raises:
        ValueError: ``q`` is not a diagonal Gaussian or ``prior`` not a
            factorised Gaussian (a flow posterior, a mixture prior: no
            per-dimension KL exists).
    """
    if not isinstance(q, tfd.MultivariateNormalDiag):
        raise ValueError(
            f"free_bits needs each latent dimension's KL in closed form, i.e. a diagonal "
            f"Gaussian q(z|x); this VAE's posterior is {type(q).__name__}. Use free_bits=0 "
            f"with this posterior.")
    check_free_bits_prior(prior)
    return tfd.kl_divergence(tfd.Normal(q.mean(), q.stddev()),
                             tfd.Normal(prior.mean(), prior.stddev()))


def free_bits_kl(q: tfd.Distribution, prior: tfd.Distribution, free_bits: float) -> tf.Tensor:
    """sum_d max(free_bits, mean over the batch of KL_d): a scalar, nats.

    Dimensions whose batch-mean KL is below ``free_bits`` contribute the
    constant ``free_bits`` and no gradient.
    """
    kl_d = tf.reduce_mean(per_dimension_kl(q, prior), axis=0)  # [D]
    return tf.reduce_sum(tf.maximum(kl_d, free_bits))
