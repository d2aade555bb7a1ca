"""Cost of checking every batch inside the compiled training step.

``VAE.train_step`` checks each batch (finite, inside the likelihood's
support; :func:`tfvae.validation.assert_valid_batch`) before using it. This
benchmark times ``fit`` epochs of each model of ``train_speed.py`` under
tfvae's defaults with the check, and with the check traced out (the function
replaced by the identity while that model's training step is traced), in
interleaved rounds; it prints the median seconds per 60,000-example epoch and
their ratio.

Usage::

    python benchmarks/batch_check.py --rounds 7       # ~3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import statistics
from unittest import mock

import numpy as np
from train_speed import EPOCH, MODELS, build, default_optimizer, fit_runner

import tfvae.model


def runners(kind, latent, hidden, data):
    checked = fit_runner(build(kind, latent, hidden), data, optimizer=default_optimizer())
    checked()  # trace (with the check) and warm up
    with mock.patch.object(tfvae.model, "assert_valid_batch", lambda x, *args, **kw: (x, 0)):
        unchecked = fit_runner(build(kind, latent, hidden), data, optimizer=default_optimizer())
        unchecked()  # traced without the check
    return {"checked": checked, "unchecked": unchecked}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    print("| model (batch) | with the check (s/epoch) | check traced out (s/epoch) | ratio |")
    print("|---|---:|---:|---:|")
    for name, (kind, latent, hidden, batch, n) in MODELS.items():
        x = (np.random.default_rng(0).random((n, 28, 28, 1)) < 0.3).astype(np.float32)
        data = tfvae.datasets.make_dataset(x, batch_size=batch, seed=0)
        timed = runners(kind, latent, hidden, data)
        seconds = {label: [] for label in timed}
        for _ in range(args.rounds):
            for label, run in timed.items():
                seconds[label].append(run())
        per_epoch = {k: statistics.median(v) * EPOCH / n for k, v in seconds.items()}
        print(f"| {name} ({batch}) | {per_epoch['checked']:.2f} | {per_epoch['unchecked']:.2f} "
              f"| {per_epoch['checked'] / per_epoch['unchecked']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
