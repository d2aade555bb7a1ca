"""Where an MLP VAE's training step spends its time, part by part.

Every row is one pass of in-graph training steps (one ``tf.function`` with a
``tf.range`` loop over the batches, no Keras ``fit``), from the same initial
weights, timed in interleaved rounds; the table gives milliseconds per step
(median pass):

- ``networks, no optimizer``: encoder and decoder forward and backward (the
  loss is the sum of both networks' outputs), gradients computed, no update;
- ``networks + keras Adam`` / ``networks + FusedAdam``: the same with
  ``keras.optimizers.Adam`` or :class:`tfvae.FusedAdam` applying the update;
- ``VAE, tfd.Bernoulli autodiff``: tfvae's ELBO step (posterior sample,
  Bernoulli log-likelihood, KL; ``FusedAdam``) with the likelihood of
  ``tfp.distributions.Bernoulli``, differentiated by autodiff;
- ``VAE, tfvae Bernoulli``: the same with tfvae's likelihood, whose
  gradient ``x - sigmoid(logits)`` is written out
  (:func:`tfvae.likelihoods.bernoulli_log_prob`).

Usage::

    python benchmarks/step_parts.py            # ~1 minute on 2 CPU cores
    python benchmarks/step_parts.py --rounds 9
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from train_speed import DATA_SHAPE, build  # this folder is on sys.path when run as a script

import tfvae

# name: (hidden units, latent dim, batch)
MODELS = {"mlp 784-400-20": ((400,), 20, 128), "burda mlp 200-200-50": ((200, 200), 50, 100)}
STEPS = 100


class TfpBernoulli(tfvae.Bernoulli):
    """tfvae's Bernoulli likelihood with TFP's own log-prob (autodiff gradient)."""

    def _base_distribution(self, params):
        return tfp.distributions.Bernoulli(logits=params, dtype=tf.float32)


def runner(part: str, hidden, latent, batches: tf.Tensor):
    """A function that runs STEPS training steps of ``part`` and returns seconds."""
    likelihood = TfpBernoulli() if part == "VAE, tfd.Bernoulli autodiff" else "bernoulli"
    vae = build("mlp", latent, hidden, likelihood)
    variables = vae.trainable_variables
    optimizer = keras.optimizers.Adam(1e-3) if "keras Adam" in part else tfvae.FusedAdam(1e-3)
    optimizer.build(variables)

    def loss_of(x):
        if part.startswith("networks"):
            h = vae.encoder(x, training=True)
            return tf.reduce_sum(h) + tf.reduce_sum(vae.decoder(h[:, :latent], training=True))
        reconstruction, kl = vae.elbo_terms(x, training=True)
        return tf.reduce_mean(reconstruction + kl)

    @tf.function
    def run():
        total = tf.constant(0.0)
        for i in tf.range(STEPS):
            with tf.GradientTape() as tape:
                loss = loss_of(batches[i])
            gradients = tape.gradient(loss, variables)
            if part == "networks, no optimizer":
                # use every gradient, so that none is pruned from the graph
                total += tf.add_n([tf.reduce_sum(g) for g in gradients])
            else:
                optimizer.apply(gradients, variables)
            total += loss
        return total

    def timed() -> float:
        start = time.perf_counter()
        run().numpy()
        return time.perf_counter() - start

    return timed


PARTS = ["networks, no optimizer", "networks + keras Adam", "networks + FusedAdam",
         "VAE, tfd.Bernoulli autodiff", "VAE, tfvae Bernoulli"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed passes (default 5)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    rng = np.random.default_rng(0)
    results = {}
    for name, (hidden, latent, batch) in MODELS.items():
        batches = tf.constant((rng.random((STEPS, batch, *DATA_SHAPE)) < 0.3).astype(np.float32))
        runs = {part: runner(part, hidden, latent, batches) for part in PARTS}
        for run in runs.values():
            run()  # trace and warm up
        seconds = {part: [] for part in PARTS}
        for _ in range(args.rounds):
            for part, run in runs.items():
                seconds[part].append(run())
        results[name] = {part: 1e3 * statistics.median(s) / STEPS for part, s in seconds.items()}

    print(f"\nms per training step, median of {args.rounds} interleaved passes of {STEPS} steps "
          f"(TF {tf.__version__}, Keras {keras.__version__})\n")
    print("| part | " + " | ".join(f"{name} (batch {MODELS[name][2]})" for name in MODELS) + " |")
    print("|---|" + "---:|" * len(MODELS))
    for part in PARTS:
        print(f"| {part} | " + " | ".join(f"{results[n][part]:.2f}" for n in MODELS) + " |")
    for name, r in results.items():
        keras_adam = r["networks + keras Adam"] - r["networks, no optimizer"]
        fused = r["networks + FusedAdam"] - r["networks, no optimizer"]
        saved = 1 - r["VAE, tfvae Bernoulli"] / r["VAE, tfd.Bernoulli autodiff"]
        print(f"\n{name}: the Adam update costs {keras_adam:.2f} ms per step with Keras's Adam "
              f"({keras_adam / r['networks + keras Adam']:.0%} of that step), {fused:.2f} ms with "
              f"FusedAdam; the written-out Bernoulli gradient saves {saved:.0%} of the VAE step")
    return results


if __name__ == "__main__":
    main()
