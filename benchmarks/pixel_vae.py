"""The PixelVAE's trade-off, measured: a strong decoder lets the KL collapse (issue 11, stretch).

Trains the same VAE (Burda et al.'s encoder and decoder MLPs: latent 50, 200-200 tanh; dynamically
binarised MNIST; Adam 1e-3, batch 100) for ``--minutes`` each with four decoders p(x|z):

* ``vae``: one Bernoulli per pixel given z (the plain VAE: z must carry everything);
* ``pixelvae``: a 3-layer gated PixelCNN conditioned on the decoder's output for z
  (``--likelihood pixelcnn``: the PixelVAE of Gulrajani et al. 2016);
* ``pixelvae_free_bits``: the same with free bits (``--free-bits``, nats per dimension);
* ``pixelvae_1_layer``: a 1-layer PixelCNN, a weaker autoregressive decoder.

Each is an ordinary ``tfvae train`` run folder under ``--runs`` (resumable; a finished run is read,
not trained again). For each: the test ELBO with its reconstruction and KL terms, the KL per latent
dimension, the active units (variance of the posterior means over the test images > 0.01, Burda et
al.) and log p(x) by importance sampling (``--k`` samples) on ``--nll-images`` test images.

Usage::

    python benchmarks/pixel_vae.py --minutes 15 --out benchmarks/results/pixel_vae.json
    python benchmarks/pixel_vae.py --quick          # a small check of the script (about 2 minutes)
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

import tfvae
from tfvae import datasets, latent, objectives
from tfvae.checkpoints import load_model

VARIANTS = {
    "vae": {"likelihood": "bernoulli"},
    "pixelvae": {"likelihood": "pixelcnn"},
    "pixelvae_free_bits": {"likelihood": "pixelcnn", "free_bits": None},  # --free-bits
    "pixelvae_1_layer": {"likelihood": "pixelcnn:1"},
}


def config(variant: str, args) -> tfvae.TrainConfig:
    settings = dict(VARIANTS[variant])
    if "free_bits" in settings:
        settings["free_bits"] = args.free_bits
    small = dict(hidden_units=(32,), latent_dim=8, limit=300) if args.quick else {}
    return tfvae.TrainConfig(**{
        "dataset": "mnist", "network": "mlp", "hidden_units": (200, 200), "latent_dim": 50,
        "epochs": 10_000, "batch_size": 100, "learning_rate": 1e-3,
        "dynamic_binarization": True, "seed": args.seed, "minutes": args.minutes,
        **small, **settings})


def kl_per_dimension(model: tfvae.VAE, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """KL(q(z_d|x) || p(z_d)) averaged over ``x``, per latent dimension: ``[D]`` nats."""
    parts = [objectives.per_dimension_kl(model.posterior(x[i:i + batch_size]), model.prior)
             for i in range(0, len(x), batch_size)]
    return np.concatenate([np.asarray(p) for p in parts]).mean(axis=0)


def measure(variant: str, args, x_test: np.ndarray) -> dict:
    cfg = config(variant, args)
    run = args.runs / f"pixel_vae_{variant}"
    metrics = tfvae.train(cfg, run, verbose=2)
    model = load_model(run / "model.keras")
    per_dimension = kl_per_dimension(model, x_test)
    n = min(args.nll_images, len(x_test))
    log_px = model.log_likelihood(x_test[:n], num_samples=args.k, seed=0, verbose=1)
    return {"variant": variant, "likelihood": cfg.likelihood, "free_bits": cfg.free_bits,
            "epochs": metrics["epochs"],
            "train_minutes": (metrics["history"].get("train_minutes") or [None])[-1],
            "test_elbo": metrics["test"]["elbo"], "test_kl": metrics["test"]["kl"],
            "test_reconstruction": metrics["test"]["reconstruction"],
            "kl_per_dimension": per_dimension.round(4).tolist(),
            "active_units": int(latent.active_units(model, x_test)),
            "latent_dim": cfg.latent_dim,
            "nll_nats": float(-log_px.mean()),
            "nll_stderr": float(log_px.std(ddof=1) / np.sqrt(n)), "nll_images": n, "k": args.k}


def table(rows: list[dict]) -> str:
    lines = ["| decoder p(x\\|z) | epochs | test ELBO | reconstruction | KL | dimensions with KL "
             "> 0.1 nat | active units | test NLL |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        name = r["likelihood"] + (f", free bits {r['free_bits']}" if r["free_bits"] else "")
        busy = int(np.sum(np.asarray(r["kl_per_dimension"]) > 0.1))
        lines.append(f"| {name} | {r['epochs']} | {r['test_elbo']:.2f} | "
                     f"{r['test_reconstruction']:.2f} | {r['test_kl']:.2f} | "
                     f"{busy} / {r['latent_dim']} | {r['active_units']} / {r['latent_dim']} | "
                     f"{r['nll_nats']:.2f} ± {r['nll_stderr']:.2f} ({r['nll_images']:,} images, "
                     f"k = {r['k']}) |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("variants", nargs="*", metavar="VARIANT",
                   help=f"which runs, of {', '.join(VARIANTS)} (default: all, in this order)")
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes per run")
    p.add_argument("--free-bits", type=float, default=0.5,
                   help="nats per latent dimension for pixelvae_free_bits")
    p.add_argument("--k", type=int, default=100, help="importance samples for log p(x)")
    p.add_argument("--nll-images", type=int, default=500,
                   help="test images for log p(x) (each sample is a PixelCNN pass)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=Path, default=Path("runs"), help="where the run folders go")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    p.add_argument("--quick", action="store_true",
                   help="tiny networks, 300 images, 0.2 minutes per run: checks the script")
    args = p.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; expected some of {', '.join(VARIANTS)}")
    args.variants = args.variants or list(VARIANTS)
    if args.quick:
        args.minutes, args.k, args.nll_images = 0.2, 8, 50
        args.runs = args.runs / "quick"
    x_test, _ = datasets.load("mnist", "test", binarized=True, seed=args.seed,
                              limit=300 if args.quick else None)
    rows = [measure(variant, args, x_test) for variant in args.variants]
    text = table(rows)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "date": datetime.date.today().isoformat(), "settings": vars(args) | {
                "runs": str(args.runs), "out": str(args.out)},
            "rows": rows, "table": text}, indent=1))
    return rows


if __name__ == "__main__":
    main()
