"""PixelCNN against the Burda et al. VAE on dynamically binarised MNIST, measured in one run.

1. Trains a gated PixelCNN (:class:`tfvae.pixelcnn.PixelCNN`) on tfvae's MNIST
   ``train`` split, each pixel redrawn as Bernoulli(grey value) every time it is
   seen (``make_dataset(..., dynamic_binarization=True)``, as for the VAE), with
   Adam, for a wall-clock budget (``--minutes``). Resumable: a checkpoint every
   ``--checkpoint-steps`` training steps (one Keras "epoch") in the run folder
   ``--out``; run the same command again after an interruption and the budget
   counts the minutes of earlier sessions.
2. The VAE is the reference run of ``burda_nll.py`` (``--vae-run``, default
   ``runs/burda``). If that run is missing or unfinished it is trained (or
   resumed) there through ``burda_nll.py``'s own config, for ``--vae-minutes``
   (default: ``--minutes``); ``--no-vae-training`` refuses instead.
3. Measures, in this one process and on the same test images (grey MNIST test
   set binarised once with seed 0, the fixed random subset of ``--test-images``
   that ``burda_nll.py --test-limit`` uses):
   - test NLL in nats: PixelCNN exact (``log_prob``), VAE importance-sampled with
     ``--k`` samples (``burda_nll.evaluate_nll``);
   - images sampled per second: ``VAE.sample`` (binary draws) and
     ``PixelCNN.sample`` (one compiled loop of 784 steps), each after a warm-up call;
   - training examples per second: fresh copies of both models trained on the
     same pipeline for a few interleaved rounds (median), and each run's
     average (examples seen over its training minutes).

Prints a table and writes JSON (``--json``, default
``benchmarks/results/pixelcnn_vs_vae.json``).

Usage::

    python benchmarks/pixelcnn_vs_vae.py --minutes 60 --out runs/pixelcnn
    python benchmarks/pixelcnn_vs_vae.py --quick --out /tmp/pixelcnn_quick   # ~1 min check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import burda_nll
import keras
import numpy as np
import tensorflow as tf
from hour_runs import paired_difference

import tfvae
from tfvae import callbacks, checkpoints, datasets, plot, runs, training
from tfvae.files import read_json
from tfvae.optimizers import FusedAdam
from tfvae.pixelcnn import PixelCNN
from tfvae.timing import sampling_speed

PAPER_PIXELCNN_NLL = 81.30  # van den Oord et al. 2016a (PixelRNN paper), Table 2, PixelCNN
GOAL_PIXELCNN_NLL = 84.0


def _dilations(text: str) -> list[int]:
    try:
        return [int(d) for d in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. "
                                         f"1,2,4,8, got {text!r}") from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=60.0,
                   help="PixelCNN training budget in wall-clock minutes, across resumed sessions "
                        "(stops after the checkpoint that crosses it)")
    p.add_argument("--out", type=Path, default=Path("runs/pixelcnn"),
                   help="the PixelCNN's run folder")
    p.add_argument("--vae-run", type=Path, default=Path("runs/burda"),
                   help="the Burda VAE's run folder (burda_nll.py --run)")
    p.add_argument("--vae-minutes", type=float, default=None,
                   help="training budget of the VAE if it must be trained (default: --minutes)")
    p.add_argument("--no-vae-training", action="store_true",
                   help="stop with an error if --vae-run holds no finished run")
    p.add_argument("--test-images", type=int, default=2000,
                   help="evaluate on this fixed random subset of the test set (seed 0)")
    p.add_argument("--k", type=int, default=5000, help="importance samples of the VAE's NLL")
    p.add_argument("--filters", type=int, default=32)
    p.add_argument("--layers", type=int, default=6, help="gated layers of the PixelCNN")
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--first-kernel-size", type=int, default=7)
    p.add_argument("--vertical-dilations", type=_dilations, default=None,
                   help="row dilations of the vertical stack, one per layer, e.g. 1,2,4,8,1,2 "
                        "(default: all 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--final-learning-rate", type=float, default=None,
                   help="decay the step size exponentially to this over --minutes "
                        "(default: constant)")
    p.add_argument("--checkpoint-steps", type=int, default=200,
                   help="training steps between checkpoints (one Keras epoch)")
    p.add_argument("--valid-images", type=int, default=500,
                   help="validation images evaluated at each checkpoint")
    p.add_argument("--train-limit", type=int, default=None,
                   help="train on a fixed random subset of this many images")
    p.add_argument("--sample-images", type=int, default=16,
                   help="images per timed PixelCNN sample call")
    p.add_argument("--vae-sample-images", type=int, default=10000,
                   help="images per timed VAE sample call")
    p.add_argument("--speed-rounds", type=int, default=3)
    p.add_argument("--speed-steps", type=int, default=10,
                   help="PixelCNN training steps per timed round (the VAE trains 256 steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None,
                   help="result file (default benchmarks/results/pixelcnn_vs_vae.json; with "
                        "--quick OUT.json beside the run folder)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny end-to-end check (~1 min; sets the options above): 16 "
                        "filters, 3 layers, 256 training images, 0.3 min budget, 50 test "
                        "images, k=100, a VAE trained 2 epochs on 1,000 images into OUT-vae "
                        "beside OUT")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes, args.test_images, args.k = 0.3, 50, 100
        args.filters, args.layers, args.first_kernel_size = 16, 3, 5
        args.checkpoint_steps, args.valid_images, args.train_limit = 4, 64, 256
        args.sample_images, args.vae_sample_images = 2, 1000
        args.speed_rounds, args.speed_steps = 2, 4
        args.vae_run = args.out.with_name(args.out.name + "-vae")
    if args.json is None:
        args.json = (args.out.with_name(args.out.name + ".json") if args.quick else
                     Path(__file__).parent / "results" / "pixelcnn_vs_vae.json")
    return args


# ------------------------------------------------------------------ PixelCNN
def _if_set(**options) -> dict:
    """The options that are not None: a run made before an option existed still resumes."""
    return {name: value for name, value in options.items() if value is not None}


def architecture(args) -> dict:
    return {"image_shape": [28, 28, 1], "filters": args.filters, "num_layers": args.layers,
            "kernel_size": args.kernel_size, "first_kernel_size": args.first_kernel_size,
            **_if_set(vertical_dilations=args.vertical_dilations)}


def identity(args) -> dict:
    """What a resumed PixelCNN run must share with the stored one (not the budget)."""
    return {"model": "tfvae.pixelcnn.PixelCNN", **architecture(args),
            "batch_size": args.batch_size, "learning_rate": args.learning_rate,
            "checkpoint_steps": args.checkpoint_steps, "train_limit": args.train_limit,
            "valid_images": args.valid_images, "seed": args.seed,
            "data": "mnist train split, dynamic binarization",
            **_if_set(final_learning_rate=args.final_learning_rate)}


def build_pixelcnn(args) -> PixelCNN:
    keras.utils.set_random_seed(args.seed)
    model = PixelCNN(**architecture(args), seed=args.seed)
    model.compile(optimizer=FusedAdam(args.learning_rate))
    return model


def training_pipeline(x: np.ndarray, batch_size: int, seed: int) -> tf.data.Dataset:
    """Endless dynamically binarised batches (checkpoints split it into Keras epochs)."""
    return datasets.make_dataset(x, batch_size, dynamic_binarization=True, seed=seed).repeat()


def decay(args, budget: callbacks.TimeBudget) -> list[keras.callbacks.Callback]:
    """The step-size decay over the time budget, if ``--final-learning-rate`` asks for one."""
    if args.final_learning_rate is None:
        return []
    return [callbacks.LearningRateDecay(args.learning_rate, args.final_learning_rate,
                                        epochs=10**6, budget=budget)]


def train_pixelcnn(args) -> tuple[PixelCNN, dict]:
    """Train (or resume, or load the finished) PixelCNN run in ``args.out``."""
    run = runs.RunFolder(args.out)
    run.check_ours()
    with run.locked():
        status = run.status(identity(args))
        if status == "complete":
            print(f"{run.path}: finished run, loading its model.", flush=True)
            return keras.saving.load_model(run / runs.MODEL), read_json(run / runs.METRICS)
        resume = None if status == "new" else run.resume_point(args.checkpoint_steps)
        x_train, _ = datasets.load("mnist", "train", limit=args.train_limit,
                                   seed=args.seed)
        x_valid, _ = datasets.load("mnist", "valid", limit=args.valid_images, binarized=True,
                                   seed=0)
        run.start(identity(args))
        if resume is None:
            model, done, history = build_pixelcnn(args), 0, {}
        else:
            model, done, history = (keras.saving.load_model(resume.model_file), resume.epoch,
                                    resume.history)
            print(f"Resuming {run.path} after {done} checkpoints.", flush=True)
        minutes_before = (history.get("train_minutes") or [0.0])[-1]
        budget = callbacks.TimeBudget(args.minutes, minutes_before)
        saver = callbacks.EpochCheckpoint(run, history=history)
        if minutes_before < args.minutes:
            # A new seed per session: a resumed run does not replay the same binarisations.
            model.fit(training_pipeline(x_train, args.batch_size, args.seed + done),
                      steps_per_epoch=args.checkpoint_steps, epochs=10**6, initial_epoch=done,
                      validation_data=(x_valid,), validation_batch_size=250,
                      callbacks=[budget, *decay(args, budget), saver], shuffle=False,
                      verbose=2)
        history = saver.history
        checkpoints_done = len(history.get("loss", [])) or done
        steps = checkpoints_done * args.checkpoint_steps
        minutes = (history.get("train_minutes") or [minutes_before])[-1]
        metrics = {"checkpoints": checkpoints_done, "steps": steps,
                   "examples_seen": steps * args.batch_size,
                   "passes_over_train_split": steps * args.batch_size / len(x_train),
                   "train_minutes": minutes,
                   "final_train_nll_nats": (history.get("nll") or [None])[-1],
                   "final_valid_nll_nats": (history.get("val_nll") or [None])[-1],
                   "history": history, "completed": True}
        if not (run / runs.MODEL).exists():
            checkpoints.save_model(model, run / runs.MODEL)
        run.finish(metrics)
        return model, metrics


# ----------------------------------------------------------------------- VAE
def vae_config(args) -> tfvae.TrainConfig:
    minutes = args.minutes if args.vae_minutes is None else args.vae_minutes
    # burda_nll's own defaults (the plain VAE) for every option not set here.
    config = burda_nll.config(burda_nll.parse_args(["--seed", str(args.seed),
                                                    "--minutes", str(minutes)]))
    if args.quick:
        config = dataclasses.replace(config, epochs=2, limit=1000)
    return config


def train_or_load_vae(args) -> tuple[tfvae.VAE, dict]:
    """The Burda VAE of ``args.vae_run``, trained or resumed there first if unfinished."""
    run = runs.RunFolder(args.vae_run)
    metrics = read_json(run / runs.METRICS)
    if not (metrics and metrics.get("completed")):
        if args.no_vae_training:
            raise SystemExit(f"{run.path} holds no finished VAE run (no completed "
                             f"{runs.METRICS}); run benchmarks/burda_nll.py --run {run.path} "
                             f"first, or leave out --no-vae-training.")
        print(f"Training the Burda VAE into {run.path} (burda_nll.py's config).", flush=True)
        metrics = tfvae.train(vae_config(args), run.path, verbose=2)
    history = metrics.get("history", {})
    return checkpoints.load_model(run / runs.MODEL), {
        "epochs": metrics.get("epochs"),
        "train_minutes": (history.get("train_minutes") or [None])[-1],
        "final_train_elbo_nats": (history.get("elbo") or [None])[-1],
        "stopped_by_time_budget": metrics.get("stopped_by_time_budget"),
        "examples_per_epoch": (metrics.get("config") or {}).get("limit") or 54000,
    }


# -------------------------------------------------------------- measurements
def pixelcnn_nll(model: PixelCNN, x_test: np.ndarray) -> dict:
    t0 = time.perf_counter()
    nll = -model.log_prob(x_test)
    return {"test_images": len(x_test), "nll_nats": float(nll.mean()),
            "nll_stderr": float(nll.std(ddof=1) / np.sqrt(len(nll))),
            "method": "exact: sum over pixels of log p(x_i | x_<i)",
            "seconds": time.perf_counter() - t0,
            "nll_per_image_nats": [round(float(v), 3) for v in nll]}


def training_speeds(args, vae_config_: tfvae.TrainConfig, pixelcnn: PixelCNN,
                    x_train: np.ndarray) -> dict:
    """Training examples per second of fresh copies of both models, interleaved rounds."""
    vae = training.build_vae(vae_config_, (28, 28, 1))
    vae_x = x_train[:256 * vae_config_.batch_size]
    vae_data = datasets.make_dataset(vae_x, vae_config_.batch_size, dynamic_binarization=True,
                                     seed=1)
    fresh = PixelCNN.from_config(pixelcnn.get_config())
    fresh.compile(optimizer=FusedAdam(args.learning_rate))
    pcnn_x = x_train[:args.speed_steps * args.batch_size]
    pcnn_data = datasets.make_dataset(pcnn_x, args.batch_size, dynamic_binarization=True, seed=1)
    runners = {"vae": (vae, vae_data, len(vae_x)), "pixelcnn": (fresh, pcnn_data, len(pcnn_x))}
    for model, data, _ in runners.values():
        model.fit(data.take(2), shuffle=False, verbose=0)  # traces the training step
    speeds = {name: [] for name in runners}
    for _ in range(args.speed_rounds):
        for name, (model, data, n) in runners.items():
            t0 = time.perf_counter()
            model.fit(data, shuffle=False, verbose=0)
            speeds[name].append(n / (time.perf_counter() - t0))
    return {name: {"examples_per_second": statistics.median(v), "rounds": v,
                   "examples_per_round": runners[name][2]} for name, v in speeds.items()}


def table(result: dict) -> str:
    p, v = result["pixelcnn"], result["vae"]

    def num(value, fmt):
        return "" if value is None else format(value, fmt)

    rows = [
        ("test NLL, nats (same test images)",
         f"{p['nll']['nll_nats']:.2f} ± {p['nll']['nll_stderr']:.2f} (exact)",
         f"{v['nll']['nll_nats']:.2f} ± {v['nll']['nll_stderr']:.2f} "
         f"(importance-sampled, k={v['nll']['k']})", ""),
        ("PixelCNN − VAE, paired over the images", "", "",
         f"{result['pixelcnn_minus_vae_nll']['nats']:+.2f} ± "
         f"{result['pixelcnn_minus_vae_nll']['stderr']:.2f} nats"),
        ("training minutes", num(p["training"]["train_minutes"], ".1f"),
         num(v["training"]["train_minutes"], ".1f"), ""),
        ("passes over the training set", num(p["training"]["passes_over_train_split"], ".2f"),
         num(v["training"]["epochs"], "d"), ""),
        ("training examples/s (fresh model, median)",
         f"{p['train_speed']['examples_per_second']:,.0f}",
         f"{v['train_speed']['examples_per_second']:,.0f}",
         f"VAE {result['vae_train_speedup']:,.0f}x"),
        ("images sampled/s", f"{p['sampling']['images_per_second']:,.3g}",
         f"{v['sampling']['images_per_second']:,.0f}",
         f"VAE {result['vae_sampling_speedup']:,.0f}x"),
        ("parameters", f"{p['parameters']:,}", f"{v['parameters']:,}", ""),
    ]
    lines = ["| | PixelCNN | VAE (Burda et al.) | |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "tensorflow": tf.__version__, "keras": keras.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "settings": {k: str(v) for k, v in vars(args).items()},
              "paper_pixelcnn_nll_nats": PAPER_PIXELCNN_NLL,
              "goal_pixelcnn_nll_nats": GOAL_PIXELCNN_NLL}
    pixelcnn, pixelcnn_training = train_pixelcnn(args)
    vae, vae_training = train_or_load_vae(args)

    x_test, _ = datasets.load("mnist", "test", binarized=True, seed=0, limit=args.test_images)
    print(f"PixelCNN exact NLL of {len(x_test)} test images", flush=True)
    pcnn_nll = pixelcnn_nll(pixelcnn, x_test)
    vae_nll = burda_nll.evaluate_nll(vae, argparse.Namespace(
        test_limit=args.test_images, eval_batch_size=100, k=args.k, seed=args.seed))

    print("Sampling speed", flush=True)
    vae_sampling, _ = sampling_speed(lambda n, s: vae.sample(n, seed=s), args.vae_sample_images,
                                     rounds=5)
    pcnn_sampling, images = sampling_speed(lambda n, s: pixelcnn.sample(n, seed=s),
                                           args.sample_images, rounds=1)
    plot.save_image_grid(images, runs.RunFolder(args.out) / runs.SAMPLES_PNG,
                         ncols=min(8, len(images)))

    print("Training speed", flush=True)
    x_train, _ = datasets.load("mnist", "train", limit=args.train_limit,
                               seed=args.seed)
    speeds = training_speeds(args, vae_config(args), pixelcnn, x_train)
    run_minutes = pixelcnn_training.get("train_minutes")
    vae_minutes = vae_training.get("train_minutes")
    result["pixelcnn"] = {
        "architecture": architecture(args), "parameters": pixelcnn.count_params(),
        "training": {k: v for k, v in pixelcnn_training.items() if k != "history"},
        "nll": pcnn_nll, "sampling": pcnn_sampling, "train_speed": {
            **speeds["pixelcnn"],
            "run_average_examples_per_second": (
                pixelcnn_training["examples_seen"] / (60 * run_minutes) if run_minutes else None)},
        "samples_png": str(runs.RunFolder(args.out) / runs.SAMPLES_PNG)}
    result["vae"] = {
        "run": str(args.vae_run), "parameters": vae.count_params(), "training": vae_training,
        "nll": vae_nll, "sampling": vae_sampling, "train_speed": {
            **speeds["vae"],
            "run_average_examples_per_second": (
                vae_training["epochs"] * vae_training["examples_per_epoch"] / (60 * vae_minutes)
                if vae_minutes and vae_training.get("epochs") else None)}}
    gap, stderr = paired_difference(pcnn_nll["nll_per_image_nats"],  # the same images
                                    vae_nll["nll_per_image_nats"])
    result["pixelcnn_minus_vae_nll"] = {"nats": gap, "stderr": stderr}
    result["vae_sampling_speedup"] = (vae_sampling["images_per_second"]
                                      / pcnn_sampling["images_per_second"])
    result["vae_train_speedup"] = (speeds["vae"]["examples_per_second"]
                                   / speeds["pixelcnn"]["examples_per_second"])
    result["table"] = table(result)
    print(result["table"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
