"""Which priors let the Burda et al. VAE escape its z-blind start? A few epochs of each, per epoch.

Issue 13's VampPrior hour collapsed in its first epoch (KL ~ 0: a decoder that ignores z). This
probe trains ``burda_nll.py``'s model (latent 50, 200-200 tanh, dynamically binarised MNIST, Adam
1e-3, batch 100) from the same seed for ``--epochs`` epochs with each prior named, and prints per
epoch the training ELBO and KL (nats) and two statistics of q(z|x) over ``--probe-images`` training
images: the mean posterior standard deviation and the spread of the posterior means (their standard
deviation over images, averaged over dimensions). A collapsed encoder has a spread near 0. The
ELBO printed is the true one (KL weight 1), also during a ``--kl-warmup``.

Usage::

    python benchmarks/prior_collapse.py     # standard_normal vamp:1 vamp:10 mog:500 vamp:500
    python benchmarks/prior_collapse.py --epochs 8 vamp:500 standard_normal
    python benchmarks/prior_collapse.py --out benchmarks/results/prior_collapse.json
    python benchmarks/prior_collapse.py --kl-warmup 54000 vamp:10   # the paper's 100-epoch warm-up
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import burda_nll
import numpy as np

from tfvae import training

DEFAULT_PRIORS = ("standard_normal", "vamp:1", "vamp:10", "mog:500", "vamp:500")


def build(prior: str, seed: int, kl_warmup: int = 0):
    """The Burda VAE, as ``burda_nll.py`` builds it, with ``prior`` ('name' or 'name:K')."""
    name, _, components = prior.partition(":")
    argv = ["--prior", name, "--seed", str(seed), "--kl-warmup", str(kl_warmup)]
    argv += ["--prior-components", components] if components else []
    config = burda_nll.config(burda_nll.parse_args(argv))
    return config, training.build_vae(config, (28, 28, 1))


def posterior_statistics(model, x: np.ndarray) -> tuple[float, float]:
    """(mean posterior standard deviation, mean over dimensions of the means' std over ``x``)."""
    q = model.posterior(x)
    return float(np.mean(q.stddev())), float(np.mean(np.std(q.mean(), axis=0)))


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("priors", nargs="*", default=list(DEFAULT_PRIORS),
                   help="priors as NAME or NAME:COMPONENTS (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--probe-images", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kl-warmup", type=int, default=0,
                   help="steps over which the KL weight rises from 0 to 1 (540 = one epoch)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    rows = []
    print("| prior | epoch | ELBO | KL | mean posterior sd | spread of means | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    data = None  # the same images for every prior: loaded once
    for prior in args.priors:
        config, model = build(prior, args.seed, args.kl_warmup)
        data = data or training.load_data(config)
        train = training.make_training_data(config, data["train"])
        probe = data["train"][:args.probe_images]
        start = time.perf_counter()
        for epoch in range(1, args.epochs + 1):
            history = model.fit(train, epochs=1, verbose=0).history
            sd, spread = posterior_statistics(model, probe)
            row = {"prior": prior, "epoch": epoch, "elbo": history["elbo"][-1],
                   "kl": history["kl"][-1], "posterior_sd": sd, "spread_of_means": spread,
                   "seconds": time.perf_counter() - start}
            rows.append(row)
            print(f"| {prior} | {epoch} | {row['elbo']:.2f} | {row['kl']:.3f} | {sd:.3f} | "
                  f"{spread:.4f} | {row['seconds']:.0f} |", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows},
                                       indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
