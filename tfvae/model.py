"""The Variational Auto-Encoder as a ``keras.Model``.

Shapes used below: ``B`` examples in a batch, ``D = latent_dim``, ``K``
importance samples, ``data_shape`` the shape of one example (e.g.
``(28, 28, 1)``), ``C = num_classes`` for a conditional VAE. All
log-probabilities are in nats, per example.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import importance, objectives
from tfvae.callbacks import NonFiniteLossGuard
from tfvae.distribute import apply_gradients, optimizer_loss, step_outputs, xla_problem
from tfvae.flows import InverseAutoregressiveFlow, check_flow
from tfvae.likelihoods import Likelihood, get_likelihood
from tfvae.optimizers import get_optimizer
from tfvae.priors import FixedPrior, Prior, get_prior
from tfvae.seeds import stateless_seed
from tfvae.validation import (
    assert_valid_batch,
    assert_valid_labels,
    check_count,
    check_data,
    check_labels,
    check_number,
    first_batch,
    invalid_batch_error,
    invalid_labels_error,
    invalid_labels_message,
    invalid_values_message,
)

tfd = tfp.distributions

KL_MODES = ("analytic", "mc")
# Floor on the posterior standard deviation: keeps log q(z|x) finite.
MIN_POSTERIOR_SCALE = 1e-4
# Training steps per call of the compiled training function when compile() is
# not told otherwise; chosen from benchmarks/train_speed.py.
DEFAULT_STEPS_PER_EXECUTION = 64


def _has_analytic_kl(latent_dim: int, prior: tfd.Distribution) -> bool:
    q = tfd.MultivariateNormalDiag(loc=tf.zeros([latent_dim]), scale_diag=tf.ones([latent_dim]))
    try:
        tfd.kl_divergence(q, prior)
    except NotImplementedError:
        return False
    return True


@keras.saving.register_keras_serializable(package="tfvae")
class VAE(keras.Model):
    """Variational Auto-Encoder trained by maximising the ELBO.

    Args:
        encoder: ``keras.Model`` mapping ``[B, *data_shape]`` to
            ``[B, 2 * latent_dim]`` (mean, then an unconstrained scale;
            the standard deviation is ``softplus(raw) + 1e-4``).
        decoder: ``keras.Model`` mapping ``[B, latent_dim]`` to
            ``[B, *data_shape]``, one distribution parameter per value.
        latent_dim: size ``D`` of z.
        likelihood: p(x|z): a name (``"bernoulli"``, ``"continuous_bernoulli"``,
            ``"normal"``, ``"normal_per_pixel"``, ``"normal:0.1"``) or a
            :class:`tfvae.likelihoods.Likelihood`.
        prior: p(z): ``None`` or ``"standard_normal"`` (the default), a
            :class:`tfvae.priors.Prior` (saved with the model; learned ones:
            ``"mog"``, ``"vamp"``, or :class:`tfvae.priors.MixtureOfGaussians`,
            :class:`tfvae.priors.VampPrior` with their component count, their KL
            always by Monte Carlo), or any TFP distribution with event shape
            ``[D]`` (not saved by ``model.save``).
        beta: weight of the KL term (1 gives the ELBO).
        kl_warmup_steps: if above 0, the KL weight rises linearly from 0 to
            ``beta`` over this many training steps (KL warm-up, Bowman et al.
            2016; Sønderby et al. 2016): step ``i`` (the optimizer's step
            count) uses ``beta * min(1, i / kl_warmup_steps)``, computed in
            the graph, so it is exact for any ``steps_per_execution`` and a
            resumed run continues the schedule.
        kl: ``"analytic"`` (closed form, falling back to Monte Carlo with a
            warning where TFP has none) or ``"mc"`` (one-sample estimate
            log q(z|x) - log p(z) at the same z as the reconstruction term).
        iw_samples: if above 1, ``evaluate`` also reports ``iw_elbo``, the
            importance-weighted bound with this many samples (Burda et al.).
        objective: what training maximises (:mod:`tfvae.objectives`):
            ``"elbo"`` (the default), ``"iwae"``, the importance-weighted
            bound L_k with ``k`` reparameterised samples per example (Burda
            et al. 2015), or ``"dreg"``, the same bound with the doubly
            reparameterised encoder gradient (Tucker et al. 2018). Then
            ``loss`` is -L_k, also reported as the metric ``iwae`` (L_k);
            ``reconstruction``, ``kl`` and ``elbo`` are the first sample's
            ELBO terms. ``beta`` (1) and ``kl_warmup_steps`` (0) are refused
            with them: the bound has no KL term to weight.
        k: importance samples per example for ``"iwae"``/``"dreg"`` (>= 1;
            ``"elbo"`` takes 1).
        free_bits: lambda >= 0, nats per latent dimension (Kingma et al.
            2016; ``"elbo"`` only): the training loss's KL becomes
            ``sum_d max(lambda, KL_d)`` with ``KL_d`` the batch mean of
            dimension d's closed-form KL, so that a dimension below lambda
            is not pushed further down. Needs a diagonal-Gaussian q(z|x) and
            a factorised Gaussian prior. ``loss`` is this objective; ``kl``
            and ``elbo`` stay the true ones. 0 (the default) is off.
        seed: seed of the model's sampling noise.
        num_classes: ``None`` (an unconditional VAE), or ``C``: a conditional
            VAE (Kingma et al. 2014; Sohn et al. 2015), q(z|x,y) and
            p(x|z,y) with y a class label in ``[0, C)``, given to the
            networks as a one-hot ``[B, C]`` vector: build them with
            ``condition_dim=C`` (:func:`tfvae.networks.build_networks`), so
            that the encoder takes ``[x, one_hot(y)]`` and the decoder
            ``[z, one_hot(y)]``. Then ``fit``/``evaluate`` take labels
            (``fit(x, y)`` or a ``tf.data`` of ``(x, y)`` batches), and
            :meth:`encode`, :meth:`decode`, :meth:`posterior`,
            :meth:`reconstruct`, :meth:`sample` (``labels=``) and
            :meth:`predict` need them: int labels ``[B]``, checked like
            ``x`` (count, dtype, NaN, range), in every batch. The prior p(z)
            is the same for every class. ``iw_samples`` and
            :meth:`log_likelihood` then bound and estimate log p(x|y).
        flow: ``None`` (q(z|x) the diagonal Gaussian), or a
            :class:`tfvae.flows.InverseAutoregressiveFlow` (Kingma et al.
            2016; saved with the model): q(z|x) is the Gaussian pushed through
            it, ``log_prob`` by the change of variables, the KL by Monte Carlo
            at the training sample (``kl`` is then ignored), and "the
            posterior mean" (:meth:`reconstruct`, :mod:`tfvae.latent`) is the
            flow of the Gaussian's mean (:class:`tfvae.flows.FlowPosterior`).

    Training minimises ``reconstruction + beta * kl`` averaged over the batch,
    where ``reconstruction = -E_q[log p(x|z)]`` (one reparameterised sample)
    and ``kl = KL(q(z|x) || p(z))`` (conditional: ``-E_q[log p(x|z,y)]`` and
    ``KL(q(z|x,y) || p(z))``, a bound on log p(x|y)). ``fit``/``evaluate`` report ``loss``,
    ``reconstruction``, ``kl`` and ``elbo`` (per example, nats).

    Every batch is checked inside the compiled step (finite, within the
    likelihood's support): a bad batch stops ``fit``/``evaluate`` with a
    ``ValueError`` naming it. Under XLA (``jit_compile=True``), which drops
    in-graph assertions, the bad values are counted instead and found after
    each call of the compiled function (every ``steps_per_execution`` steps):
    ``fit`` then restores the weights of the last good epoch before raising,
    and ``evaluate`` raises once it ran. ``fit`` also stops at a NaN/inf
    loss, restores the weights of the last good epoch and raises
    :class:`tfvae.callbacks.TrainingDiverged`.
    """

    # Whether fit/evaluate accept the label -1 (validation.MISSING_LABEL) for an
    # unlabelled example: only the semi-supervised subclass can train on those.
    allows_missing_labels = False

    def __init__(self, encoder: keras.Model, decoder: keras.Model, latent_dim: int,
                 likelihood: str | Likelihood = "bernoulli",
                 prior: str | Prior | tfd.Distribution | None = None, beta: float = 1.0,
                 kl: str = "analytic", iw_samples: int = 0, seed: int | None = None,
                 kl_warmup_steps: int = 0, num_classes: int | None = None,
                 objective: str = "elbo", k: int = 1, free_bits: float = 0.0,
                 flow: InverseAutoregressiveFlow | None = None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = int(latent_dim)
        self.num_classes = (None if num_classes is None
                            else check_count(num_classes, "num_classes", low=2))
        self.data_shape = tuple(int(d) for d in encoder.inputs[0].shape[1:])
        self._check_networks()
        self.likelihood = get_likelihood(likelihood)
        self.likelihood.build_for(self.data_shape)

        self.latent_prior = get_prior(prior)
        self.latent_prior.bind(self)  # e.g. the VampPrior takes the encoder and data shape
        self.latent_prior.build_for(self.latent_dim)
        if kl not in KL_MODES:
            raise ValueError(f"Unknown kl {kl!r}. Expected one of {', '.join(KL_MODES)}.")
        self.kl_mode = kl
        self.flow = check_flow(flow, self.latent_dim)
        # Learned priors (mixtures) declare that the Monte-Carlo KL is expected: no warning.
        # A flow posterior has no closed-form KL either.
        expects_mc = self.latent_prior.monte_carlo_kl or self.flow is not None
        self.analytic_kl = (kl == "analytic" and not expects_mc
                            and _has_analytic_kl(self.latent_dim, self.prior))
        if kl == "analytic" and not self.analytic_kl and not expects_mc:
            warnings.warn(
                f"TFP has no closed-form KL between a diagonal Gaussian and "
                f"{type(self.prior).__name__}; using the Monte-Carlo estimate.",
                stacklevel=2,
            )
        beta = check_number(beta, "beta", low=0.0)
        # A variable, so that it can be changed between fits without retracing
        # the compiled training step.
        self.beta = self.add_weight(
            name="beta", shape=(), dtype="float32", trainable=False,
            initializer=keras.initializers.Constant(float(beta)), autocast=False,
        )
        self.iw_samples = check_count(iw_samples, "iw_samples", low=0)
        self.kl_warmup_steps = check_count(kl_warmup_steps, "kl_warmup_steps", low=0)
        self.objective, self.k = objectives.check_objective(objective, k)
        self.free_bits = check_number(free_bits, "free_bits", low=0.0)
        self._check_objective_options(beta)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.iw_elbo_tracker = keras.metrics.Mean(name="iw_elbo")
        self.iwae_tracker = keras.metrics.Mean(name="iwae")
        # Bad input values seen since fit/evaluate began (not in self.metrics:
        # neither logged nor reset by Keras); see invalid_values().
        self.invalid_tracker = keras.metrics.Sum(name="invalid_values")
        self.invalid_labels_tracker = keras.metrics.Sum(name="invalid_labels")
        self.built = True

    def _check_objective_options(self, beta: float) -> None:
        """Options that the objective cannot use raise ``ValueError``."""
        if self.objective != "elbo":
            given = {"beta": (beta, 1.0), "kl_warmup_steps": (self.kl_warmup_steps, 0),
                     "free_bits": (self.free_bits, 0.0)}
            for name, (value, neutral) in given.items():
                if value != neutral:
                    raise ValueError(
                        f"{name}={value} changes the ELBO's KL term, which objective "
                        f"{self.objective!r} (the importance-weighted bound) does not have; "
                        f"expected {name}={neutral}, or objective 'elbo'.")
        if self.free_bits:
            objectives.check_free_bits_prior(self.prior)
            if self.flow is not None:  # refused here, not first at the traced step
                raise ValueError(
                    "free_bits needs each latent dimension's KL in closed form, i.e. a diagonal "
                    "Gaussian q(z|x); this VAE has a flow posterior. Use free_bits=0 with a flow.")

    def _check_networks(self):
        inputs = len(self.encoder.inputs), len(self.decoder.inputs)
        wanted = 1 if self.num_classes is None else 2
        if inputs != (wanted, wanted):
            raise ValueError(
                f"encoder and decoder take {inputs[0]} and {inputs[1]} input(s); this VAE has "
                f"num_classes={self.num_classes}, so expected {wanted} each: "
                + ("x and z (build them without condition_dim)." if wanted == 1 else
                   f"[x, condition] and [z, condition], e.g. networks.build_networks(..., "
                   f"condition_dim={self.num_classes})."))
        if self.num_classes is not None:
            sizes = (tuple(self.encoder.inputs[1].shape[1:]),
                     tuple(self.decoder.inputs[1].shape[1:]))
            if sizes != ((self.num_classes,),) * 2:
                raise ValueError(
                    f"the networks' condition inputs have shapes {sizes[0]} and {sizes[1]}; "
                    f"expected ({self.num_classes},) each, the one-hot label of "
                    f"num_classes={self.num_classes}.")
        out = tuple(self.encoder.output_shape[1:])
        if out != (2 * self.latent_dim,):
            raise ValueError(
                f"encoder output shape is {out}; expected ({2 * self.latent_dim},), the mean "
                f"and raw scale of q(z|x) for latent_dim={self.latent_dim}."
            )
        dec_in = tuple(self.decoder.inputs[0].shape[1:])
        dec_out = tuple(self.decoder.output_shape[1:])
        if dec_in != (self.latent_dim,) or dec_out != self.data_shape:
            raise ValueError(
                f"decoder maps {dec_in} to {dec_out}; expected ({self.latent_dim},) to "
                f"{self.data_shape}, the encoder's input shape."
            )

    # ----------------------------------------------------------------- parts
    def _next_seed(self) -> tf.Tensor:
        return tf.cast(self.seed_generator.next(), tf.int32)

    @property
    def prior(self) -> tfd.Distribution:
        """p(z), a TFP distribution with event shape ``[D]``."""
        return self.latent_prior.distribution()

    def _networks_input(self, main, y):
        """``main``, or ``[main, one_hot(y)]`` for a conditional VAE.

        Label values are not checked here (compiled code checks them per batch
        with :func:`tfvae.validation.assert_valid_labels`, public methods
        eagerly); only whether they were given where the model needs them,
        and not given where it does not.
        """
        if self.num_classes is None or y is None:
            self._check_labels(y, None, "y")  # raises if the VAE wants the opposite
            return main
        # Both tensors: Keras refuses a list mixing arrays and tensors.
        return [tf.convert_to_tensor(main), tf.one_hot(tf.cast(y, tf.int32), self.num_classes)]

    def posterior(self, x, y=None, training: bool = False) -> tfd.Distribution:
        """q(z|x) (conditional: q(z|x,y), ``y`` int labels ``[B]``), the encoder's
        diagonal Gaussian: batch shape ``[B]``, event ``[D]``; with a ``flow``, that
        Gaussian through the flow (a :class:`tfvae.flows.FlowPosterior`).

        The public :meth:`encode` is this plus eager input checks; compiled
        code (training and test steps) calls ``posterior`` directly.
        """
        inputs = self._networks_input(x, y)
        params = tf.cast(self.encoder(inputs, training=training), tf.float32)
        loc, raw_scale = tf.split(params, 2, axis=-1)
        scale = tf.nn.softplus(raw_scale) + MIN_POSTERIOR_SCALE
        base = tfd.MultivariateNormalDiag(loc=loc, scale_diag=scale)
        return base if self.flow is None else self.flow.posterior(base)

    def decode(self, z, y=None, training: bool = False) -> tfd.Distribution:
        """p(x|z) (conditional: p(x|z,y)): batch shape ``z.shape[:-1]``, event
        shape ``data_shape``.

        ``y``: int labels of the last batch axis of ``z`` (``[B]`` for ``z``
        ``[B, D]`` or ``[K, B, D]``), checked when run eagerly.
        """
        z = tf.convert_to_tensor(z, tf.float32)
        lead = tf.shape(z)[:-1]
        flat_z = tf.reshape(z, [-1, self.latent_dim])
        if self.num_classes is not None and y is not None:
            if tf.executing_eagerly():
                y = check_labels(y, self.num_classes, z.shape[-2] if z.shape.rank > 1 else None)
            # One label per example of the last batch axis, repeated over the others.
            y = tf.reshape(tf.broadcast_to(tf.cast(y, tf.int32), lead), [-1])
        params = self.decoder(self._networks_input(flat_z, y), training=training)
        params = tf.reshape(params, tf.concat([lead, self.data_shape], axis=0))
        return self.likelihood.distribution(params)

    def encode(self, x, y=None) -> tfd.MultivariateNormalDiag:
        """:meth:`posterior` after checking ``x`` (shape, dtype, NaN, support)
        and, for a conditional VAE, its labels ``y``."""
        self._check(x, "x")
        return self.posterior(tf.convert_to_tensor(x), self._check_labels(y, len(x), "y"))

    def kl_divergence(self, q: tfd.Distribution, z: tf.Tensor) -> tf.Tensor:
        """KL(q || p) per example, ``[B]``: closed form, or log q(z) - log p(z)."""
        if self.analytic_kl:
            return tfd.kl_divergence(q, self.prior)
        return q.log_prob(z) - self.prior.log_prob(z)

    def elbo_terms(self, x, y=None, training: bool = False, seed=None
                   ) -> tuple[tf.Tensor, tf.Tensor]:
        """``(reconstruction, kl)`` per example, each ``[B]`` nats.

        ``reconstruction = -log p(x|z)`` at one reparameterised sample
        ``z = mu + sigma * eps`` (an unbiased estimate of -E_q log p(x|z));
        conditional: ``-log p(x|z,y)`` with z ~ q(z|x,y), ``y`` labels ``[B]``.
        """
        return self._elbo_terms(x, y, training, seed)[1:]

    def _elbo_terms(self, x, y=None, training: bool = False, seed=None):
        """``(q, reconstruction, kl)``: :meth:`elbo_terms` and the posterior."""
        q = self.posterior(x, y, training=training)
        z = q.sample(seed=self._next_seed() if seed is None else stateless_seed(seed))
        reconstruction = -self.decode(z, y, training=training).log_prob(x)
        return q, reconstruction, self.kl_divergence(q, z)

    def _checked_batch(self, data, step=None):
        """``(x, labels, sample_weight)`` of one batch of a compiled step, after
        the in-graph checks of ``x`` and (conditional) the labels."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, bad = assert_valid_batch(x, self.likelihood.support, step)
        self.invalid_tracker.update_state(bad)
        if self.num_classes is None:  # labels, if any, are ignored, as before
            return x, None, sample_weight
        if y is None:
            check_labels(None, self.num_classes, name="y")  # raises
        y, bad_labels = assert_valid_labels(y, self.num_classes, self.allows_missing_labels)
        self.invalid_labels_tracker.update_state(bad_labels)
        return x, y, sample_weight

    def _objective_terms(self, x, y, training: bool):
        """``(loss, reconstruction, kl, iw)`` of a checked batch: the training
        objective's loss per example ``[B]`` (see ``objective``, ``free_bits``),
        the ELBO terms ``[B]``, and for ``"iwae"``/``"dreg"`` the
        :class:`tfvae.objectives.IWTerms` (else None)."""
        if self.objective != "elbo":
            iw = objectives.importance_weighted_terms(
                self, x, y, self.k, self._next_seed(), training=training,
                dreg=self.objective == "dreg" and training)
            return -iw.bound, iw.reconstruction, iw.kl, iw
        if not self.free_bits:
            reconstruction, kl = self.elbo_terms(x, y, training=training)
            return reconstruction + self.kl_weight() * kl, reconstruction, kl, None
        q, reconstruction, kl = self._elbo_terms(x, y, training=training)
        floored = objectives.free_bits_kl(q, self.prior, self.free_bits)  # a batch scalar
        return reconstruction + self.kl_weight() * floored, reconstruction, kl, None

    # -------------------------------------------------------------- training
    def train_step(self, data):
        dreg = self.objective == "dreg"
        with tf.GradientTape(persistent=dreg) as tape:
            x, y, _ = self._checked_batch(data, self.optimizer.iterations + 1)
            loss, reconstruction, kl, iw = self._objective_terms(x, y, training=True)
            regularisation = tf.add_n(self.losses) if self.losses else 0.0
            scaled_loss = optimizer_loss(self, tf.reduce_mean(loss) + regularisation)
            if dreg:
                scaled_encoder_loss = optimizer_loss(self, iw.encoder_loss + regularisation)
        gradients = (objectives.dreg_gradients(tape, scaled_loss, scaled_encoder_loss, iw.z,
                                               self.trainable_variables) if dreg else None)
        apply_gradients(self, tape, scaled_loss, gradients)
        self._update_metrics(reconstruction, kl, None, loss, None if iw is None else iw.bound)
        return step_outputs(self._metric_results())

    def test_step(self, data):
        x, y, _ = self._checked_batch(data)
        loss, reconstruction, kl, iw = self._objective_terms(x, y, training=False)
        if self.iw_samples > 1:  # conditional: a bound on log p(x|y)
            bound = importance.iw_bound(self, x, self.iw_samples, seed=self._next_seed(), y=y)
            self.iw_elbo_tracker.update_state(bound)
        self._update_metrics(reconstruction, kl, None, loss, None if iw is None else iw.bound)
        metrics = self._metric_results()
        if self.iw_samples > 1:
            metrics["iw_elbo"] = self.iw_elbo_tracker.result()
        return step_outputs(metrics)

    def invalid_values(self) -> int:
        """NaN, inf or out-of-support input values that the compiled steps saw
        since ``fit``/``evaluate`` began (0 unless XLA dropped their assertion)."""
        return int(keras.ops.convert_to_numpy(self.invalid_tracker.result()))

    def kl_weight(self) -> tf.Tensor:
        """The KL weight of the current step: ``beta``, or during the warm-up
        ``beta * min(1, step / kl_warmup_steps)`` from the optimizer's step
        count (0 before the model is compiled)."""
        if not self.kl_warmup_steps:
            return tf.convert_to_tensor(self.beta)
        optimizer = getattr(self, "optimizer", None)
        step = 0.0 if optimizer is None else tf.cast(optimizer.iterations, tf.float32)
        return self.beta * tf.minimum(1.0, step / self.kl_warmup_steps)

    def _metric_results(self) -> dict[str, tf.Tensor]:
        results = {"loss": self.loss_tracker.result(),
                   "reconstruction": self.reconstruction_tracker.result(),
                   "kl": self.kl_tracker.result(), "elbo": self.elbo_tracker.result()}
        if self.objective != "elbo":
            results["iwae"] = self.iwae_tracker.result()
        return results

    def _update_metrics(self, reconstruction, kl, beta, loss=None, bound=None):
        """``loss`` per example (default ``reconstruction + beta * kl``);
        ``bound``: L_k ``[B]`` of ``"iwae"``/``"dreg"``."""
        self.loss_tracker.update_state(reconstruction + beta * kl if loss is None else loss)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        self.elbo_tracker.update_state(-(reconstruction + kl))
        if bound is not None:
            self.iwae_tracker.update_state(bound)

    @property
    def metrics(self):
        trackers = [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker,
                    self.elbo_tracker]
        trackers += [self.iwae_tracker] if self.objective != "elbo" else []
        return trackers + ([self.iw_elbo_tracker] if self.iw_samples > 1 else [])

    def call(self, x, training: bool = False):
        """Mean reconstruction E[x|z] at one z ~ q(z|x): ``[B, *data_shape]``.

        Conditional: ``x`` is the pair ``(x, y)``, E[x|z,y] at z ~ q(z|x,y).
        """
        y = None
        if self.num_classes is not None:
            x, y = x
        q = self.posterior(x, y, training=training)
        z = q.sample(seed=self._next_seed())
        return self.decode(z, y, training=training).mean()

    def predict_step(self, data):
        if self.num_classes is None:
            return super().predict_step(data)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        if y is None and isinstance(x, (tuple, list)):  # arrays given as one (x, y) input
            x, y = x
        x, _ = assert_valid_batch(x, self.likelihood.support)
        y, _ = assert_valid_labels(y, self.num_classes)
        return self.call((x, y))

    def compile(self, optimizer="adam", jit_compile: bool | str = "auto",
                steps_per_execution: int | str = "auto", **kwargs):
        """Keras ``compile`` with no loss to give: the loss is the negative ELBO.

        Args:
            optimizer: as for ``keras.Model.compile``, except that ``"adam"``
                (the default) is :class:`tfvae.optimizers.FusedAdam`: Keras's
                Adam, same math, with each variable's update one fused kernel
                (faster on CPUs; see ``benchmarks/README.md``).
            jit_compile: ``True``/``False``, or ``"auto"`` (default): XLA where
                Keras's own ``"auto"`` chooses it, i.e. on a GPU, outside a
                ``tf.distribute`` strategy, and not with ``run_eagerly`` (on a
                CPU XLA gained nothing in ``benchmarks/train_speed.py``).
                ``True`` is refused under a multi-worker strategy on CPUs,
                where TensorFlow cannot compile the collectives.
            steps_per_execution: an int >= 1, or ``"auto"`` (default):
                ``DEFAULT_STEPS_PER_EXECUTION`` training steps per call of the
                compiled function, which removes most of Keras's per-step
                overhead (see ``benchmarks/README.md``); 1 with
                ``run_eagerly`` or under a ``tf.distribute`` strategy (Keras
                3.15's multi-step loop fails with ``MirroredStrategy``).
                Batch-level callbacks then run every that many steps (the KL
                warm-up, computed in the graph, still changes every step).
            **kwargs: other ``keras.Model.compile`` arguments, except ``loss``.

        Explicit values win over the defaults. A saved model stores ``"auto"``
        where the default was used, so a loaded model gets the defaults of the
        machine that loads it.
        """
        if kwargs.get("loss") is not None:  # None is what a saved config holds
            raise ValueError("VAE computes its own loss (the negative ELBO); do not pass loss=.")
        if not (jit_compile == "auto" or isinstance(jit_compile, bool)):
            raise ValueError(f"jit_compile must be True, False or 'auto', got {jit_compile!r}.")
        if jit_compile is True and xla_problem(self.distribute_strategy):
            raise ValueError(xla_problem(self.distribute_strategy))
        if steps_per_execution == "auto":
            distributed = self._distribute_strategy is not None or tf.distribute.has_strategy()
            spe = 1 if kwargs.get("run_eagerly") or distributed else DEFAULT_STEPS_PER_EXECUTION
        elif (isinstance(steps_per_execution, (int, np.integer))
              and not isinstance(steps_per_execution, bool) and steps_per_execution >= 1):
            spe = int(steps_per_execution)
        else:
            raise ValueError(f"steps_per_execution must be an int >= 1 or 'auto', got "
                             f"{steps_per_execution!r}.")
        super().compile(optimizer=get_optimizer(optimizer), jit_compile=jit_compile,
                        steps_per_execution=spe, **kwargs)
        self._compile_config.config.update(jit_compile=jit_compile,
                                           steps_per_execution=steps_per_execution)

    def compile_from_config(self, config):
        # What keras.Model does, which it skips for models whose compile() is
        # overridden: restores the optimizer of a saved model.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ----------------------------------------------------- checks on inputs
    def _check(self, data, name):
        batch = first_batch(data)
        if batch is not None:
            check_data(batch, self.data_shape, self.likelihood.support, name)

    def _check_labels(self, y, count: int | None, name: str) -> np.ndarray | None:
        """Labels as int32 ``[count]`` for a conditional VAE (checked), None otherwise;
        ``ValueError`` for labels missing, bad, or given to an unconditional VAE."""
        if self.num_classes is None:
            if y is not None:
                raise ValueError(f"{name} was given, but this VAE is unconditional "
                                 f"(num_classes=None); expected no labels.")
            return None
        return check_labels(y, self.num_classes, count, name)

    def _check_inputs(self, x, y, name: str) -> None:
        """Check ``x`` (its first batch for a dataset) and, for a conditional
        VAE, its labels: ``y``, or the second item of a dataset's elements."""
        if isinstance(x, tf.data.Dataset):
            element = next(iter(x.take(1)), None)
            if element is None:
                return
            pair = isinstance(element, (tuple, list))
            x, y = (element[0], element[1] if len(element) > 1 else None) if pair else (element,
                                                                                       None)
            labels = f"the labels of {name} (the second item of its elements)"
        else:
            x, labels = first_batch(x), ("y" if name == "x" else f"the labels of {name}")
        if x is None:
            return
        check_data(x, self.data_shape, self.likelihood.support, name)
        if self.num_classes is not None:
            check_labels(y, self.num_classes, len(x), labels, self.allows_missing_labels)

    def _raise_for_invalid_labels(self) -> None:
        """After a compiled run under XLA (which drops the in-graph assertion)."""
        bad = int(keras.ops.convert_to_numpy(self.invalid_labels_tracker.result()))
        if bad:
            message = invalid_labels_message("y", bad, self.num_classes,
                                             self.allows_missing_labels)
            raise ValueError(f"{message} (found after "
                             f"the compiled step ran: XLA drops in-graph checks).")

    def _invalid_labels_error(self):
        return invalid_labels_error("y", self.num_classes or 0, self.allows_missing_labels)

    def fit(self, x=None, y=None, *args, validation_data=None, callbacks=None, **kwargs):
        """``keras.Model.fit``, with checks of ``x`` (and, conditional, its labels
        ``y``) before any work and a :class:`tfvae.callbacks.NonFiniteLossGuard`
        unless one is given.

        Raises:
            ValueError: bad data (in any batch: shape, dtype, NaN/inf, values
                outside the likelihood's support; under XLA the weights of the
                last good epoch were restored).
            TrainingDiverged: the loss became NaN/inf; the weights of the
                last good epoch (or the initial ones) were restored.
        """
        self._check_inputs(x, y, "x")
        if validation_data is not None:
            val = validation_data
            if isinstance(val, (tuple, list)):
                val, val_y = val[0], (val[1] if len(val) > 1 else None)
            else:
                val_y = None
            self._check_inputs(val, val_y, "validation_data")
        callbacks, guard = NonFiniteLossGuard.in_callbacks(callbacks)
        self.invalid_tracker.reset_state()
        self.invalid_labels_tracker.reset_state()
        with invalid_batch_error("x"), self._invalid_labels_error():
            history = super().fit(x, y, *args, validation_data=validation_data,
                                  callbacks=callbacks, **kwargs)
        guard.raise_if_stopped()
        self._raise_for_invalid_labels()
        return history

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_inputs(x, y, "x")
        self.invalid_tracker.reset_state()
        self.invalid_labels_tracker.reset_state()
        with invalid_batch_error("x"), self._invalid_labels_error():
            result = super().evaluate(x, y, *args, **kwargs)
        bad = self.invalid_values()
        if bad:  # only under XLA: otherwise the assertion raised above
            raise ValueError(f"{invalid_values_message('x', 'a batch', bad)}; expected finite "
                             f"values in the likelihood's support (for pixels: [0, 1]).")
        self._raise_for_invalid_labels()
        return result

    def predict(self, x, *args, y=None, **kwargs):
        """E[x|z] at one z ~ q(z|x) per example (:meth:`call`), after checking ``x``.

        Conditional: E[x|z,y] at z ~ q(z|x,y), with labels ``y`` (arrays), or
        ``x`` a ``tf.data`` of ``(x, y)`` batches.
        """
        self._check_inputs(x, y, "x")
        if self.num_classes is not None and not isinstance(x, tf.data.Dataset):
            x = (x, y)
        elif y is not None and self.num_classes is None:
            self._check_labels(y, None, "y")  # raises: labels for an unconditional VAE
        with invalid_batch_error("x"), invalid_labels_error("y", self.num_classes or 0):
            return super().predict(x, *args, **kwargs)

    # ------------------------------------------------------------ inference
    def sample(self, n: int, seed: int | None = None, mean: bool = False, labels=None
               ) -> tf.Tensor:
        """Generate ``n`` examples: z ~ p(z), then x ~ p(x|z) (conditional: x ~ p(x|z,y)).

        Args:
            n: number of examples.
            seed: int for reproducible draws; ``None`` uses the model's stream.
            mean: return E[x|z] (the smooth "mean image") instead of a draw.
            labels: conditional VAE only (and then required): one class for
                all ``n`` (an int), or ``n`` int labels, one per example.

        Returns:
            ``[n, *data_shape]`` float32.
        """
        n = check_count(n, "n", low=1)
        if self.num_classes is not None and labels is not None and np.ndim(labels) == 0:
            labels = np.repeat(check_labels(np.reshape(labels, [1]), self.num_classes, 1,
                                            "labels"), n)
        y = self._check_labels(labels, n, "labels")
        z_seed, x_seed = tfp.random.split_seed(
            self._next_seed() if seed is None else stateless_seed(seed), n=2)
        z = self.prior.sample(n, seed=z_seed)
        p_x = self.decode(z, y)
        return p_x.mean() if mean else p_x.sample(seed=x_seed)

    def reconstruct(self, x, y=None, sample_z: bool = False) -> tf.Tensor:
        """E[x|z] for z the posterior mean (or one draw): ``[B, *data_shape]``
        (conditional: E[x|z,y], z from q(z|x,y), ``y`` labels ``[B]``)."""
        q = self.encode(x, y)
        z = q.sample(seed=self._next_seed()) if sample_z else q.mean()
        return self.decode(z, y).mean()

    def log_likelihood(self, x, num_samples: int = 5000, batch_size: int = 100,
                       samples_per_chunk: int | None = None, seed: int | None = 0,
                       verbose: int = 1, *, y=None) -> np.ndarray:
        """Importance-weighted estimate of log p(x) per example (Burda et al. 2015);
        for a conditional VAE, of log p(x|y) with its int labels ``y`` ``[N]``
        (z drawn from q(z|x,y)); keyword-only, after the older positional arguments.

        See :func:`tfvae.importance.log_likelihood` for the memory bound.

        Returns:
            ``[N]`` float64 array, nats.
        """
        self._check(x, "x")
        y = self._check_labels(y, len(x), "y")
        return importance.log_likelihood(self, x, num_samples=num_samples,
                                         batch_size=batch_size,
                                         samples_per_chunk=samples_per_chunk,
                                         seed=seed, verbose=verbose, y=y)

    # ------------------------------------------------------- serialisation
    def get_config(self):
        if isinstance(self.latent_prior, FixedPrior):
            raise NotImplementedError(
                "This VAE's prior is a plain TFP distribution, which model.save cannot store. "
                "Use a tfvae.priors.Prior, or save the weights with "
                "model.save_weights('m.weights.h5') and rebuild the model with the same prior "
                "before load_weights."
            )
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "latent_dim": self.latent_dim,
            "likelihood": keras.saving.serialize_keras_object(self.likelihood),
            "prior": keras.saving.serialize_keras_object(self.latent_prior),
            "beta": float(keras.ops.convert_to_numpy(self.beta)),
            "kl_warmup_steps": self.kl_warmup_steps,
            "kl": self.kl_mode,
            "iw_samples": self.iw_samples,
            "seed": self.seed,
            "num_classes": self.num_classes,
            "objective": self.objective,
            "k": self.k,
            "free_bits": self.free_bits,
            "flow": (None if self.flow is None
                     else keras.saving.serialize_keras_object(self.flow)),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)  # models saved by tfvae 0.1.0 have no prior: standard Normal
        for key in ("encoder", "decoder", "likelihood", "prior", "flow"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
