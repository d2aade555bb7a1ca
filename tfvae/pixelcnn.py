"""A gated PixelCNN for binary images: exact log-likelihood, sequential sampling.

van den Oord et al. (2016), "Conditional Image Generation with PixelCNN
Decoders": p(x) = prod_i p(x_i | x_<i) over the pixels in raster order (row
by row, left to right), each a Bernoulli whose logit a stack of causal
convolutions computes from the pixels before it.

Two stacks remove the blind spot of a single masked convolution:

* the vertical stack sees, at row ``i``, the rows ``<= i`` (all columns of
  the kernel's width); its features enter the horizontal stack shifted down by
  one row, so they carry rows ``< i`` only;
* the horizontal stack sees, at ``(i, j)``, the pixels of row ``i`` left of
  ``j`` (first layer, type A, excludes ``(i, j)``) and its own features at
  columns ``<= j`` (later layers, type B: those features already exclude
  pixel ``(i, j)``), with a residual connection per layer.

Each layer is ordinary ``keras.layers.Conv2D`` ("valid") on a zero-padded
input: padding only above, left and right (vertical) or only left
(horizontal) is what makes the convolutions causal, with no masked kernels.
The gate is ``tanh(a) * sigmoid(b)`` over the two halves of a convolution's
``2 * filters`` channels.

With ``first_kernel_size = 2 * q + 1`` and ``kernel_size = 2 * p + 1`` over
``num_layers = L`` layers, the logit of pixel ``(i, j)`` depends on exactly
the pixels ``(r, c)`` with ``i - 1 - V <= r <= i - 1, |c - j| <= R``, or
``r == i, j - R <= c < j``, where ``R = q + (L - 1) * p`` and, with the
vertical kernels dilated ``d_0, ..., d_{L-1}`` rows apart
(``vertical_dilations``; default all 1), ``V = d_0 q + (d_1 + ... + d_{L-1}) p``
(tested). Dilations that double (1, 2, 4, 8, ...) let the vertical stack see
every row above a pixel in a few layers, at no extra cost per layer (after
WaveNet's dilated causal convolutions; an addition to van den Oord et al.):
a logit then sees the whole image above it, not only the ``R`` nearest rows.

A condition (``condition_channels = C > 0``): a map ``[B, H, W, C]`` that does not
depend on the pixels (in the PixelVAE, the VAE decoder's output for z) enters every
layer's two stacks through 1x1 convolutions, as van den Oord et al.'s conditional
PixelCNN adds its ``V s``; the logit of pixel ``(i, j)`` then also sees the condition at
rows ``<= i`` (:mod:`tfvae.pixelvae`).

Shapes: ``B`` images of ``image_shape = (H, W, 1)``; log-probabilities are
in nats per image (the sum over the ``H * W`` pixels).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfvae.callbacks import NonFiniteLossGuard
from tfvae.distribute import apply_gradients, optimizer_loss, step_outputs
from tfvae.likelihoods import bernoulli_log_prob
from tfvae.optimizers import get_optimizer
from tfvae.seeds import stateless_seed
from tfvae.validation import (
    assert_valid_batch,
    check_count,
    check_data,
    first_batch,
    invalid_batch_error,
)

# Tag of the in-graph check that a batch is binary, so that its error can be told apart.
NON_BINARY_BATCH = "tfvae-non-binary-batch"
SUPPORT = (0.0, 1.0)
BINARIZE_HINT = ("PixelCNN models binary images: binarize first, e.g. "
                 "tfvae.datasets.load(..., binarized=True) or "
                 "tfvae.datasets.make_dataset(..., dynamic_binarization=True)")


def _gate(t: tf.Tensor) -> tf.Tensor:
    """``tanh(a) * sigmoid(b)`` for ``t = [a, b]`` along the channels: ``[..., 2F] -> [..., F]``."""
    a, b = tf.split(t, 2, axis=-1)
    return tf.tanh(a) * tf.sigmoid(b)


def _shift_down(t: tf.Tensor, rows: int = 1) -> tf.Tensor:
    """Move every row ``rows`` down (zeros above): row ``i`` then holds row ``i - rows``."""
    return tf.pad(t, [[0, 0], [rows, 0], [0, 0], [0, 0]])[:, :-rows]


def _rows_apart(t: tf.Tensor, dilation: int, half: int) -> tf.Tensor:
    """Rows ``i - dilation * half, .., i - dilation, i`` of ``t`` side by side in the
    channels at row ``i``: ``[B, h, W, C] -> [B, h, W, (half + 1) C]``. A ``1 x k``
    convolution of this is the ``(half + 1) x k`` convolution dilated ``dilation``
    rows apart, without TensorFlow's slower dilated-convolution path on CPUs."""
    return tf.concat([_shift_down(t, dilation * r) for r in range(half, 0, -1)] + [t], axis=-1)


def _pad(t: tf.Tensor, top: int = 0, left: int = 0, right: int = 0) -> tf.Tensor:
    return tf.pad(t, [[0, 0], [top, 0], [left, right], [0, 0]])


def _halves(num_layers: int, kernel_size: int, first_kernel_size: int) -> list[int]:
    """Each layer's kernel half-width: ``first_kernel_size // 2``, then ``kernel_size // 2``."""
    return [first_kernel_size // 2] + [kernel_size // 2] * (num_layers - 1)


def _check_dilations(value, num_layers: int, halves: list[int]) -> tuple[int, ...]:
    """``value`` as ``L`` row dilations (``None``: all 1), refused if one would
    skip rows: layer ``l``'s taps ``0, d, .., d * half`` rows up only fill the
    rows reached so far without gaps if ``d <= 1 + (rows reached before it)``."""
    if value is None:
        return (1,) * num_layers
    if isinstance(value, (int, float, str)):
        raise ValueError(f"vertical_dilations must be a sequence of {num_layers} integers >= 1, "
                         f"one per layer, got {value!r}.")
    dilations = tuple(check_count(d, "vertical_dilations[]") for d in value)
    if len(dilations) != num_layers:
        raise ValueError(f"vertical_dilations needs one dilation per layer ({num_layers}), got "
                         f"{len(dilations)}: {list(dilations)}.")
    reached = 0
    for layer, (d, half) in enumerate(zip(dilations, halves, strict=True)):
        if d > reached + 1:
            raise ValueError(f"vertical_dilations[{layer}] = {d} would leave rows unseen (a "
                             f"blind spot): the layers before it reach {reached} row(s) up, so "
                             f"its dilation must be at most {reached + 1}.")
        reached += d * half
    return dilations


def _check_kernel(value, name: str) -> int:
    size = check_count(value, name, low=3)
    if size % 2 == 0:
        raise ValueError(f"{name} must be odd (a centred kernel), got {size}.")
    return size


@keras.saving.register_keras_serializable(package="tfvae")
class PixelCNN(keras.Model):
    """Gated PixelCNN with one Bernoulli per pixel (see the module docstring).

    Args:
        image_shape: ``(H, W, 1)`` (or ``(H, W)``) of the binary images.
        filters: channels ``F`` of each stack (each gated convolution has ``2F``).
        num_layers: gated layers ``L`` (the first of type A, the rest type B).
        kernel_size: odd width ``k`` of the layers after the first: the
            vertical stack's kernels are ``(k // 2 + 1) x k``, the horizontal
            stack's ``1 x (k // 2 + 1)``.
        first_kernel_size: odd width of the first layer's kernels (its input
            has one channel, so a wide first kernel is cheap and widens the
            receptive field).
        head_units: channels of the 1x1 ReLU layer before the logits
            (default ``F``).
        seed: seed of :meth:`sample` when it is given none.
        condition_channels: ``C``, channels of a condition map ``[B, H, W, C]``
            that :meth:`call` then requires (0: none, a plain PixelCNN).
        vertical_dilations: ``L`` row dilations of the vertical stack's
            kernels, e.g. ``(1, 2, 4, 8, 1, 2)`` (default all 1); each must be
            at most one more than the rows the layers before it reach, so
            that no row above is skipped (see :func:`rows_reached`).

    ``fit``/``evaluate`` minimise and report ``loss`` and ``nll``: the
    negative log-likelihood -log p(x) in nats per image, averaged over the
    batch (``loss`` adds any regularisation losses of the layers). Inputs
    must be binary, ``0.0`` or ``1.0``, float, shape ``[B, *image_shape]``:
    anything else (NaN, values outside [0, 1] or between 0 and 1, a wrong
    shape or dtype) raises ``ValueError`` before any work or, for a later
    batch of a ``tf.data`` pipeline, from the compiled step (as for
    :class:`tfvae.VAE`).
    """

    def __init__(self, image_shape=(28, 28, 1), filters: int = 32, num_layers: int = 6,
                 kernel_size: int = 3, first_kernel_size: int = 7,
                 head_units: int | None = None, seed: int | None = None,
                 condition_channels: int = 0,
                 vertical_dilations: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        shape = tuple(int(d) for d in image_shape)
        if len(shape) == 2:
            shape = (*shape, 1)
        if len(shape) != 3 or shape[2] != 1 or min(shape) < 1:
            raise ValueError(f"image_shape must be (H, W) or (H, W, 1) with H, W >= 1 (one "
                             f"binary channel), got {tuple(image_shape)!r}.")
        self.image_shape = shape
        self.filters = check_count(filters, "filters")
        self.num_layers = check_count(num_layers, "num_layers")
        self.kernel_size = _check_kernel(kernel_size, "kernel_size")
        self.first_kernel_size = _check_kernel(first_kernel_size, "first_kernel_size")
        self.head_units = self.filters if head_units is None else check_count(head_units,
                                                                              "head_units")
        self.seed = seed
        self.condition_channels = check_count(condition_channels, "condition_channels", low=0)
        self.vertical_dilations = _check_dilations(vertical_dilations, self.num_layers,
                                                   self._halves())

        f2 = 2 * self.filters
        self.vertical, self.horizontal, self.links, self.outputs_1x1 = [], [], [], []
        for layer, half in enumerate(self._halves()):
            # Vertical: rows i - d * half .. i (every d-th), columns j - half .. j + half;
            # dilated, its rows come side by side in the channels (_rows_apart).
            rows = 1 if self.vertical_dilations[layer] > 1 else half + 1
            self.vertical.append(keras.layers.Conv2D(f2, (rows, 2 * half + 1),
                                                     name=f"vertical_{layer}"))
            # Horizontal: columns j - half .. j - 1 (type A) or j - half .. j (type B).
            width = half if layer == 0 else half + 1
            self.horizontal.append(keras.layers.Conv2D(f2, (1, width), name=f"horizontal_{layer}"))
            self.links.append(keras.layers.Conv2D(f2, 1, name=f"link_{layer}"))
            self.outputs_1x1.append(keras.layers.Conv2D(self.filters, 1, name=f"residual_{layer}"))
        # The condition's share of each layer's pre-activations, per stack.
        conditioned = range(self.num_layers) if self.condition_channels else ()
        self.condition_vertical = [keras.layers.Conv2D(f2, 1, use_bias=False,
                                                       name=f"condition_vertical_{layer}")
                                   for layer in conditioned]
        self.condition_horizontal = [keras.layers.Conv2D(f2, 1, use_bias=False,
                                                         name=f"condition_horizontal_{layer}")
                                     for layer in conditioned]
        self.head = keras.layers.Conv2D(self.head_units, 1, name="head")
        self.to_logits = keras.layers.Conv2D(1, 1, name="logits")
        self._build_layers()

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.nll_tracker = keras.metrics.Mean(name="nll")
        # Bad input values the compiled steps saw since fit/evaluate began (not
        # logged, not reset by Keras); found after the step runs under XLA.
        self.invalid_tracker = keras.metrics.Sum(name="invalid_values")
        self._sampler = None

    def _halves(self) -> list[int]:
        return _halves(self.num_layers, self.kernel_size, self.first_kernel_size)

    def _build_layers(self):
        """Create every weight now, so that a loaded model can take its weights."""
        for layer, half in enumerate(self._halves()):
            channels = 1 if layer == 0 else self.filters
            stacked = half + 1 if self.vertical_dilations[layer] > 1 else 1
            self.vertical[layer].build((None, None, None, stacked * channels))
            self.horizontal[layer].build((None, None, None, channels))
            self.links[layer].build((None, None, None, 2 * self.filters))
            self.outputs_1x1[layer].build((None, None, None, self.filters))
        for conv in (*self.condition_vertical, *self.condition_horizontal):
            conv.build((None, None, None, self.condition_channels))
        self.head.build((None, None, None, self.filters))
        self.to_logits.build((None, None, None, self.head_units))
        self.built = True

    # ---------------------------------------------------------------- network
    def call(self, x, condition=None, training: bool = False):
        """Logits of p(x_i = 1 | x_<i) for every pixel: ``[B, h, W, 1]`` for
        ``x`` of ``[B, h, W, 1]``. Any ``h <= H`` works: the logits of row ``i``
        depend on rows ``<= i`` only, so leaving out the rows below changes nothing.
        ``condition``: ``[B, h, W, C]``, required when ``condition_channels > 0``."""
        x = tf.cast(x, self.compute_dtype)
        if (condition is None) != (self.condition_channels == 0):
            wanted = (f"a condition map [B, H, W, {self.condition_channels}]"
                      if self.condition_channels else "no condition map")
            raise ValueError(f"this PixelCNN has condition_channels={self.condition_channels}; "
                             f"expected {wanted}.")
        if condition is not None:
            condition = tf.cast(condition, self.compute_dtype)
        v, h = x, x
        for layer, half in enumerate(self._halves()):
            dilation = self.vertical_dilations[layer]
            if dilation == 1:
                v_pre = self.vertical[layer](_pad(v, top=half, left=half, right=half))
            else:
                v_pre = self.vertical[layer](_pad(_rows_apart(v, dilation, half), left=half,
                                                  right=half))
            if layer == 0:  # type A: columns j - half .. j - 1 (the extra last column dropped)
                h_pre = self.horizontal[layer](_pad(h, left=half))[:, :, :-1]
            else:           # type B: columns j - half .. j
                h_pre = self.horizontal[layer](_pad(h, left=half))
            if condition is not None:
                v_pre = v_pre + self.condition_vertical[layer](condition)
                h_pre = h_pre + self.condition_horizontal[layer](condition)
            h_pre = h_pre + self.links[layer](_shift_down(v_pre))
            v = _gate(v_pre)
            out = self.outputs_1x1[layer](_gate(h_pre))
            h = out if layer == 0 else h + out
        hidden = tf.nn.relu(self.head(tf.nn.relu(h)))
        return tf.cast(self.to_logits(hidden), tf.float32)

    def _log_prob(self, x, condition=None, training: bool = False) -> tf.Tensor:
        """log p(x) per image, ``[B]`` nats, without input checks (compiled code);
        ``condition`` as for :meth:`call`."""
        logits = self(x, condition, training=training)
        return tf.reduce_sum(bernoulli_log_prob(tf.cast(x, tf.float32), logits), axis=[1, 2, 3])

    # --------------------------------------------------------------- training
    def _valid_batch(self, x, step=None) -> tf.Tensor:
        """``x`` after the in-graph checks (finite, in [0, 1], binary); bad values counted."""
        x, bad = assert_valid_batch(x, SUPPORT, step)
        between = tf.math.count_nonzero((x > 0) & (x < 1), dtype=tf.int32)
        self.invalid_tracker.update_state(bad + between)
        check = tf.debugging.Assert(
            tf.equal(between, 0),
            [NON_BINARY_BATCH, "step", -1 if step is None else step, "bad", between],
            summarize=1)
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        x = self._valid_batch(x, self.optimizer.iterations + 1)
        with tf.GradientTape() as tape:
            nll = -self._log_prob(x, training=True)
            loss = tf.reduce_mean(nll)
            if self.losses:
                loss += tf.add_n(self.losses)
            scaled_loss = optimizer_loss(self, loss)
        apply_gradients(self, tape, scaled_loss)
        return self._update_metrics(loss, nll)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        nll = -self._log_prob(self._valid_batch(x))
        loss = tf.reduce_mean(nll) + (tf.add_n(self.losses) if self.losses else 0.0)
        return self._update_metrics(loss, nll)

    def _update_metrics(self, loss, nll):
        self.loss_tracker.update_state(loss, sample_weight=tf.shape(nll)[0])
        self.nll_tracker.update_state(nll)
        return step_outputs({"loss": self.loss_tracker.result(),
                             "nll": self.nll_tracker.result()})

    @property
    def metrics(self):
        return [self.loss_tracker, self.nll_tracker]

    def invalid_values(self) -> int:
        """NaN, inf, out-of-range or non-binary input values that the compiled
        steps saw since ``fit``/``evaluate`` began (0 unless XLA dropped the
        assertions)."""
        return int(keras.ops.convert_to_numpy(self.invalid_tracker.result()))

    def compile(self, optimizer="adam", jit_compile: bool | str = "auto", **kwargs):
        """Keras ``compile`` with no loss to give: the loss is the NLL.

        Args:
            optimizer: as for ``keras.Model.compile``; ``"adam"`` (default) is
                :class:`tfvae.optimizers.FusedAdam` (learning rate 1e-3), as
                for :meth:`tfvae.VAE.compile`.
            jit_compile: as for ``keras.Model.compile``; ``"auto"`` (default)
                lets Keras choose (XLA on a GPU, not on a CPU).
            **kwargs: other ``keras.Model.compile`` arguments, except ``loss``.
                ``steps_per_execution`` keeps Keras's default 1: a PixelCNN
                step is long enough that Keras's per-step overhead does not count.
        """
        if kwargs.get("loss") is not None:  # None is what a saved config holds
            raise ValueError("PixelCNN computes its own loss (the NLL); do not pass loss=.")
        super().compile(optimizer=get_optimizer(optimizer), jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        # keras.Model skips this for models whose compile() is overridden:
        # restores the optimizer of a saved model.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------ checks on inputs
    def _check(self, data, name: str) -> None:
        batch = first_batch(data)
        if batch is None:
            return
        check_data(batch, self.image_shape, SUPPORT, name)
        values = np.asarray(batch)
        between = int(np.count_nonzero((values > 0) & (values < 1)))
        if between:
            example = float(values[(values > 0) & (values < 1)].flat[0])
            raise ValueError(f"{name} has {between} value(s) strictly between 0 and 1 (e.g. "
                             f"{example:.6g}); expected binary pixels, 0.0 or 1.0. "
                             f"{BINARIZE_HINT}.")

    @contextlib.contextmanager
    def _batch_errors(self, name: str) -> Iterator[None]:
        """The compiled steps' input errors as one-line ``ValueError``s."""
        with invalid_batch_error(name):
            try:
                yield
            except tf.errors.InvalidArgumentError as error:
                if NON_BINARY_BATCH not in str(error):
                    raise
                found = dict(re.findall(r"\[(step|bad)\] \[([^\]]*)\]", str(error)))
                step = found.get("step", "-1")
                where = f"the batch of training step {step}" if step != "-1" else "a batch"
                raise ValueError(f"{name}: {where} has {found.get('bad', 'some')} value(s) "
                                 f"strictly between 0 and 1; expected binary pixels, 0.0 or "
                                 f"1.0. {BINARIZE_HINT}.") from None

    def fit(self, x=None, y=None, *args, validation_data=None, callbacks=None, **kwargs):
        """``keras.Model.fit`` with the input checks and NaN guard of :meth:`tfvae.VAE.fit`.

        Raises:
            ValueError: bad data in any batch (shape, dtype, NaN/inf, not binary).
            TrainingDiverged: the loss became NaN/inf; the weights of the last
                good epoch (or the initial ones) were restored.
        """
        self._check(x, "x")
        if validation_data is not None:
            val = validation_data
            self._check(val[0] if isinstance(val, (tuple, list)) else val, "validation_data")
        callbacks, guard = NonFiniteLossGuard.in_callbacks(callbacks)
        self.invalid_tracker.reset_state()
        with self._batch_errors("x"):
            history = super().fit(x, y, *args, validation_data=validation_data,
                                  callbacks=callbacks, **kwargs)
        guard.raise_if_stopped()
        return history

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """``keras.Model.evaluate`` after the input checks of :meth:`fit`."""
        self._check(x, "x")
        self.invalid_tracker.reset_state()
        with self._batch_errors("x"):
            result = super().evaluate(x, y, *args, **kwargs)
        bad = self.invalid_values()
        if bad:  # only under XLA: otherwise an assertion raised above
            raise ValueError(f"x: a batch has {bad} value(s) that are NaN, inf or neither 0 nor "
                             f"1; expected binary pixels, 0.0 or 1.0. {BINARIZE_HINT}.")
        return result

    # -------------------------------------------------------------- inference
    def logits(self, x) -> tf.Tensor:
        """:meth:`call` after checking ``x``: ``[B, H, W, 1]`` logits."""
        self._check(x, "x")
        return self(tf.convert_to_tensor(x, tf.float32))

    @tf.function(reduce_retracing=True)
    def _compiled_log_prob(self, x):
        return self._log_prob(x)

    def log_prob(self, x, batch_size: int = 256) -> np.ndarray:
        """Exact log p(x) per image, ``[N]`` float64 nats, in batches of ``batch_size``.

        Raises:
            ValueError: ``x`` is not ``[N, *image_shape]`` float with binary values.
        """
        self._check(x, "x")
        batch_size = check_count(batch_size, "batch_size")
        x = np.asarray(x, np.float32)
        parts = [self._compiled_log_prob(tf.constant(x[i:i + batch_size]))
                 for i in range(0, len(x), batch_size)]
        return np.concatenate([p.numpy() for p in parts]).astype(np.float64)

    def sampling_noise(self, n: int, seed: int | tf.Tensor | None = None) -> tf.Tensor:
        """The uniforms ``u`` of :meth:`sample`: ``[n, H, W, 1]`` in [0, 1);
        pixel ``(i, j)`` of image ``b`` is ``1`` where ``u[b, i, j] < sigmoid(logit)``."""
        n = check_count(n, "n")
        seed = self.seed if seed is None else seed
        return tf.random.stateless_uniform([n, *self.image_shape], seed=stateless_seed(seed))

    def _sample_loop(self, uniforms: tf.Tensor, condition=None) -> tf.Tensor:
        """Draw every pixel in raster order: ``H * W`` steps of one ``tf.while_loop``."""
        return self.draw(uniforms, condition)[0]

    def draw(self, uniforms: tf.Tensor, condition=None) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, p)``: pixels drawn in raster order, ``x_i = [u_i < p_i]`` with ``p_i =
        p(x_i = 1 | x_<i)``, and those probabilities; both ``[B, H, W, 1]``. ``H * W``
        steps of one ``tf.while_loop`` (wrap it in a ``tf.function``), each a forward pass
        over the rows up to the current one. ``condition``: as for :meth:`call`."""
        height, width, _ = self.image_shape

        def step(k, x, p):
            i, j = k // width, k % width
            # Rows below i do not change row i's logits: leave them out.
            rows = None if condition is None else condition[:, :i + 1]
            probability = tf.sigmoid(self(x[:, :i + 1], rows)[:, i, j, 0])
            pixel = tf.cast(uniforms[:, i, j, 0] < probability, x.dtype)
            where = tf.reshape(tf.one_hot(k, height * width, dtype=x.dtype),
                               [1, height, width, 1])
            return (k + 1, x + pixel[:, None, None, None] * where,
                    p + tf.cast(probability, p.dtype)[:, None, None, None] * where)

        _, x, p = tf.while_loop(lambda k, *_: k < height * width, step,
                                [tf.constant(0), tf.zeros_like(uniforms),
                                 tf.zeros_like(uniforms)],
                                parallel_iterations=1)
        return x, p

    def sample(self, n: int, seed: int | tf.Tensor | None = None) -> tf.Tensor:
        """Draw ``n`` images from the model: ``[n, H, W, 1]`` float32 of 0s and 1s.

        One compiled ``tf.while_loop`` of ``H * W`` steps, each one forward
        pass of the network over the ``n`` images (rows up to the current
        one). Reproducible: the same ``seed`` (an int, or an int32 ``[2]``
        tensor) gives the same images; ``None`` uses the model's ``seed``, or
        fresh randomness if that is ``None`` too. The uniforms are
        :meth:`sampling_noise`.
        """
        if self._sampler is None:  # traced once, for any n
            self._sampler = tf.function(
                self._sample_loop,
                input_signature=[tf.TensorSpec([None, *self.image_shape], tf.float32)])
        return self._sampler(self.sampling_noise(n, seed))

    # ---------------------------------------------------------- serialisation
    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "image_shape": list(self.image_shape), "filters": self.filters,
                "num_layers": self.num_layers, "kernel_size": self.kernel_size,
                "first_kernel_size": self.first_kernel_size, "head_units": self.head_units,
                "seed": self.seed, "condition_channels": self.condition_channels,
                "vertical_dilations": list(self.vertical_dilations)}


def receptive_field(num_layers: int, kernel_size: int = 3, first_kernel_size: int = 7) -> int:
    """``R``: how far a logit can see, in columns either side (and in rows up
    without dilations; module docstring)."""
    return first_kernel_size // 2 + (num_layers - 1) * (kernel_size // 2)


def rows_reached(num_layers: int, kernel_size: int = 3, first_kernel_size: int = 7,
                 vertical_dilations: Sequence[int] | None = None) -> int:
    """``V``: the logit of pixel ``(i, j)`` sees rows ``i - 1 - V .. i - 1`` above it
    (``vertical_dilations`` as for :class:`PixelCNN`; module docstring)."""
    halves = _halves(num_layers, kernel_size, first_kernel_size)
    dilations = _check_dilations(vertical_dilations, num_layers, halves)
    return sum(d * half for d, half in zip(dilations, halves, strict=True))
