"""Reference run: test NLL of the MLP VAE of Burda et al. (2015) on MNIST.

Model (Burda et al., section 5): latent 50, encoder and decoder with two tanh
layers of 200 units, Bernoulli pixels; trained on dynamically binarised grey
MNIST (tfvae's ``train`` split, each pixel redrawn as Bernoulli(grey value)
every epoch) with Adam (lr 1e-3, batch 100). Training goes through
``tfvae.train`` with a :class:`tfvae.TrainConfig` like any other run, so it
resumes after an interruption (run the same command again) and its time budget
(``--minutes``) counts the minutes of earlier sessions. The test set (grey
MNIST test images) is binarised ONCE with seed 0, and log p(x) is estimated
with k importance samples (k=5000 in the paper).

Paper, Table 1 (VAE, 1 stochastic layer, k=1 training): 86.76 nats after
3,280 epochs.

Usage::

    python benchmarks/burda_nll.py --minutes 60 --k 5000 --test-limit 2000 \
        --run runs/burda --out benchmarks/results/burda_nll_baseline.json
    # issue 13's variants: an option each, e.g.
    python benchmarks/burda_nll.py --minutes 60 --objective iwae --train-k 5 --run runs/burda_iwae
    python benchmarks/burda_nll.py --minutes 60 --prior vamp --run runs/burda_vamp
    python benchmarks/burda_nll.py --minutes 60 --iaf-steps 2 --run runs/burda_iaf
    # evaluate the run's model only (training finished or not wanted)
    python benchmarks/burda_nll.py --evaluate-only --run runs/burda --k 5000

The JSON holds the settings, the training time and epochs, the final training
ELBO, and the test NLL (mean and standard error over test images).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import tfvae
from tfvae import checkpoints, runs

PAPER_NLL = 86.76  # Burda et al. 2015, Table 1, VAE k=1, one stochastic layer
PAPER_EPOCHS = 3280


def config(args: argparse.Namespace) -> tfvae.TrainConfig:
    """The Burda et al. VAE as a training config."""
    return tfvae.TrainConfig(dataset="mnist", likelihood="bernoulli", network="mlp",
                             hidden_units=(200, 200), latent_dim=50, epochs=args.epochs,
                             batch_size=100, learning_rate=1e-3, dynamic_binarization=True,
                             seed=args.seed, minutes=args.minutes, objective=args.objective,
                             k=args.train_k, prior=args.prior,
                             prior_components=args.prior_components, iaf_steps=args.iaf_steps,
                             free_bits=args.free_bits, kl_warmup=args.kl_warmup,
                             final_learning_rate=args.final_learning_rate)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=60.0,
                   help="training budget in wall-clock minutes, across resumed sessions "
                        "(stops after the epoch that crosses it)")
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help="maximum epochs")
    p.add_argument("--k", type=int, default=5000, help="importance samples for log p(x)")
    p.add_argument("--test-limit", type=int, default=None,
                   help="evaluate on a random subset of this many test images (seed 0)")
    p.add_argument("--eval-batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    # Issue 13's variants of the same model (defaults: the paper's VAE).
    p.add_argument("--objective", default="elbo", choices=tfvae.config.OBJECTIVE_NAMES,
                   help="training objective: the ELBO, or the importance-weighted bound")
    p.add_argument("--train-k", type=int, default=1,
                   help="importance samples of the training objective (iwae, dreg)")
    p.add_argument("--prior", default="standard_normal", choices=tfvae.config.PRIOR_NAMES)
    p.add_argument("--prior-components", type=int, default=tfvae.config.DEFAULT_PRIOR_COMPONENTS,
                   help="components of a mog or vamp prior")
    p.add_argument("--iaf-steps", type=int, default=0, help="IAF steps on q(z|x) (0: none)")
    p.add_argument("--free-bits", type=float, default=0.0, help="nats per latent dimension")
    p.add_argument("--kl-warmup", type=int, default=0,
                   help="steps over which the KL weight rises from 0 to 1 (540 = one epoch)")
    p.add_argument("--final-learning-rate", type=float, default=None,
                   help="decay Adam's step exponentially from 1e-3 to this over the --minutes "
                        "(the paper: to 1e-4 over its epochs; default: constant 1e-3)")
    p.add_argument("--run", type=Path, default=Path("runs/burda"), help="the run folder")
    p.add_argument("--evaluate-only", action="store_true",
                   help="evaluate the run's model.keras without training")
    p.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    return p.parse_args(argv)


def evaluate_nll(model: tfvae.VAE, args) -> dict:
    x_test, _ = tfvae.datasets.load("mnist", "test", binarized=True, seed=0,
                                    limit=args.test_limit)
    # Time one batch first (after compiling) to state the cost of the whole set.
    batch = x_test[:args.eval_batch_size]
    model.log_likelihood(batch, num_samples=args.k, batch_size=args.eval_batch_size, verbose=0)
    t0 = time.perf_counter()
    model.log_likelihood(batch, num_samples=args.k, batch_size=args.eval_batch_size, verbose=0)
    per_batch = time.perf_counter() - t0
    n_batches = -(-len(x_test) // args.eval_batch_size)
    print(f"NLL k={args.k}: {per_batch:.1f} s per batch of {len(batch)}, "
          f"~{per_batch * n_batches / 60:.1f} min for {len(x_test)} test images", flush=True)
    t0 = time.perf_counter()
    log_px = model.log_likelihood(x_test, num_samples=args.k,
                                  batch_size=args.eval_batch_size, verbose=2, seed=args.seed)
    nll = -log_px
    return {
        "test_images": int(len(x_test)),
        "test_set": "grey MNIST test set binarised once: tfvae.datasets.load('mnist', 'test', "
                    "binarized=True, seed=0)" + ("" if args.test_limit is None else
                                                 f", random subset of {args.test_limit} (seed 0)"),
        "k": args.k,
        "nll_nats": float(nll.mean()),
        "nll_stderr": float(nll.std(ddof=1) / np.sqrt(len(nll))) if len(nll) > 1 else None,
        "nll_minutes": (time.perf_counter() - t0) / 60,
        # Per image, so that two runs on the same images compare by paired differences.
        "nll_per_image_nats": [round(float(v), 3) for v in nll],
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = {"paper_nll_nats": PAPER_NLL, "paper_epochs": PAPER_EPOCHS,
              "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
              "settings": {k: str(v) for k, v in vars(args).items()}}
    if not args.evaluate_only:
        metrics = tfvae.train(config(args), args.run, verbose=2)
        history = metrics["history"]
        result["training"] = {
            "epochs": metrics["epochs"],
            "train_minutes": (history.get("train_minutes") or [None])[-1],
            "final_train_elbo_nats": history["elbo"][-1] if history.get("elbo") else None,
            "stopped_by_time_budget": metrics.get("stopped_by_time_budget"),
        }
    model = checkpoints.load_model(args.run / runs.MODEL)
    result["evaluation"] = evaluate_nll(model, args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
