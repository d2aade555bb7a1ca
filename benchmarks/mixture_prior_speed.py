"""Speed of ``VAE.log_likelihood`` with a VampPrior: the mixture's log-density as two
matrix products (``priors.DiagonalGaussianMixture``) against TFP's ``MixtureSameFamily``.

The model is the Burda et al. MLP (784-200-200-50, tanh) of ``burda_nll.py`` with
a VampPrior of K pseudo-inputs (500 by default, the hour run's), freshly
initialised (speed does not depend on the weights), on 100 MNIST test images
thresholded at 0.5 (random binary images where the dataset is absent), with K
importance samples each (5000 by default). Rows, timed in interleaved rounds
(median over rounds):

- ``MixtureSameFamily (before)``: the previous form, reproduced by patching:
  every component evaluated at every sample, a ``[samples, images, K, D]`` tensor,
  and chunks sized for it (``K * D`` floats per sample);
- ``DiagonalGaussianMixture``: ``log_likelihood`` as it ships;
- ``standard prior``: the same networks with N(0, I), the floor a prior can reach.

Each row gives wall and process CPU seconds, the whole test set's minutes at that
rate, and the mean estimate; the rows draw different noise (their chunks
differ), so the before and today rows agree within Monte-Carlo error
(``tests/test_priors.py`` checks the two forms' log-densities against each
other and NumPy on the same points).

Usage::

    python benchmarks/mixture_prior_speed.py --rounds 3          # ~3.5 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
import tensorflow_probability as tfp
from hour_runs import paired_difference  # this folder is on sys.path when run as a script
from log_likelihood_speed import burda_model, test_images, time_rounds

from tfvae import priors


def runners(x: np.ndarray, k: int, components: int) -> dict:
    before, today = (burda_model(priors.VampPrior(components)) for _ in range(2))  # same weights
    standard = burda_model("standard_normal")

    def estimate(model):
        return lambda: model.log_likelihood(x, num_samples=k, batch_size=len(x), seed=0, verbose=0)

    def previous_form():
        # before keeps its own compiled function, traced under the patch
        def mixture(logits, components):
            return tfp.distributions.MixtureSameFamily(
                tfp.distributions.Categorical(logits=logits), components)

        with mock.patch.object(priors, "gaussian_mixture", mixture), \
                mock.patch.object(priors.VampPrior, "log_prob_values",
                                  lambda self: self.num_components * self.latent_dim):
            assert not isinstance(before.prior, priors.DiagonalGaussianMixture)
            return estimate(before)()

    return {"MixtureSameFamily (before)": previous_form,
            "DiagonalGaussianMixture": estimate(today),
            "standard prior": estimate(standard)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--k", type=int, default=5000, help="importance samples per image")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--components", type=int, default=500, help="the VampPrior's pseudo-inputs")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    x, data = test_images(args.images)
    wall, cpu, values = time_rounds(runners(x, args.k, args.components), args.rounds)

    today = "DiagonalGaussianMixture"
    print(f"\n{len(x)} images ({data}), k = {args.k}, VampPrior with {args.components} "
          f"pseudo-inputs; median of {args.rounds} rounds\n")
    print("| log p(z) | wall (s) | CPU (s) | x today's wall | whole test set (min) "
          "| mean log p(x) (nats) | minus today's (paired, ± s.e.) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    table = {}
    for name in wall:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        ratio = w / statistics.median(wall[today])
        minutes = w * 10_000 / len(x) / 60
        mean = float(values[name].mean())
        diff, se = paired_difference(values[name], values[today])
        table[name] = {"wall_s": w, "cpu_s": c, "x_today": ratio, "test_set_min": minutes,
                       "mean_log_px": mean, "minus_today": diff,
                       "minus_today_se": se}
        print(f"| {name} | {w:.2f} | {c:.2f} | {ratio:.2f} | {minutes:.1f} | {mean:.2f} "
              f"| {diff:+.3f} ± {se:.3f} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "images": len(x), "data": data, "k": args.k, "components": args.components,
            "rounds": args.rounds, "rows": table, "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d"),
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
