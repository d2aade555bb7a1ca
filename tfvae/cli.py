"""The ``tfvae`` command line: train, sample, evaluate, interpolate.

Run ``python -m tfvae --help`` (or ``tfvae --help``) and ``python -m tfvae
COMMAND --help``. Exit codes:

* 0: success (also: ``train`` into a folder holding that finished run);
* 1: a failure while running: a dataset file is missing (and cannot be
  downloaded) or corrupt, training diverged (NaN/inf loss), the run's own
  checkpoint cannot be loaded, or a write failed (disk full, file too large);
* 2: bad arguments, checked before any work: an unknown choice, a number out
  of range, a model file that is missing or not a tfvae model, an output
  that cannot be written, a run folder that is not ours, in use or holds a
  run made with other arguments, a model too large for this machine;
* 130: interrupted (Ctrl-C or SIGTERM); re-run the same ``train`` command to
  resume.

Each error is one line on stderr. TensorFlow is imported only once a command
runs (``--help`` and argument errors are instant), and on machines without an
NVIDIA driver its start-up messages about the missing GPU are not shown.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import signal
import sys
import tempfile
from pathlib import Path

from tfvae.config import MAX_SEED, NETWORK_NAMES, OBJECTIVE_NAMES, PRIOR_NAMES, TrainConfig
from tfvae.startup import quiet_tensorflow

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_CODES = {
    "0": "success",
    "1 train": "failure while running: dataset file missing or corrupt, training diverged\n"
               "       (NaN loss), the run's own checkpoint unreadable, a write failed",
    "1 data": "failure while running: dataset file missing or corrupt, a write failed",
    "1 write": "failure while running: a write failed (disk full, file too large)",
    "2 train": "bad arguments, output folder not writable, run folder not ours, in use\n"
               "       or holding another run, model too large for this machine",
    "2": "bad arguments, unusable model file or output",
    "130 train": "interrupted: Ctrl-C or SIGTERM (re-run the same command to resume)",
    "130": "interrupted: Ctrl-C or SIGTERM",
}


def _exit_codes(*keys: str) -> str:
    lines = [f"  {key.split()[0]:<4} {_CODES[key]}" for key in keys]
    return "exit codes:\n" + "\n".join(lines)


EXIT_CODES = _exit_codes("0", "1 train", "2 train", "130 train")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; set defaults shown after each help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and not any(action.default is v for v in (None, False,
                                                                           argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


class UsageError(ValueError):
    """Bad input from the user: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr (exit code 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------ argument types
def _number(kind, low, strict, what, high=None):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (not math.isfinite(value) or value < low or (strict and value == low)
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _number(int, 0, True, "a positive integer")
non_negative_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a positive number")
non_negative_float = _number(float, 0.0, False, "a number >= 0")


def _steps(text):
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2 (both ends), got {text!r}")
    return value


def _likelihood(text):
    quiet_tensorflow()
    from tfvae.likelihoods import get_likelihood

    try:
        get_likelihood(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _hidden_units(text):
    try:
        units = tuple(int(u) for u in text.split(","))
    except ValueError:
        units = ()
    if not units or min(units) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, "
                                         f"got {text!r}")
    return units


def _labels(text):
    """``--labels``: ``all`` or class labels separated by commas (range checked with the model)."""
    if text.strip().lower() == "all":
        return "all"
    try:
        labels = tuple(int(t) for t in text.split(","))
    except ValueError:
        labels = ()
    if not labels:
        raise argparse.ArgumentTypeError(f"expected 'all' or class labels separated by commas "
                                         f"(e.g. 1,3,5), got {text!r}")
    return labels


def _output(suffix: str | None = None):
    """An output file: not empty, not an existing folder, ending in ``suffix``."""
    def parse(text):
        path = Path(text)
        if not text.strip():
            raise argparse.ArgumentTypeError("expected a file name, got ''")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a folder; expected a file name")
        if suffix and path.suffix.lower() != suffix:
            raise argparse.ArgumentTypeError(f"expected a {suffix} file name, got {text!r}")
        return path

    return parse


def _folder(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got ''")
    return Path(text)


def _choices(registry: str) -> tuple[str, ...]:
    if registry == "datasets":
        from tfvae.datasets import names

        return names()
    if registry == "networks":
        return NETWORK_NAMES
    if registry == "priors":
        return PRIOR_NAMES
    if registry == "objectives":
        return OBJECTIVE_NAMES
    from tfvae.likelihoods import LIKELIHOOD_NAMES

    return LIKELIHOOD_NAMES


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`tfvae.config.TrainConfig` field, generated from the fields."""
    for f in dataclasses.fields(TrainConfig):
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        kwargs = dict(default=f.default, help=meta["help"], metavar=meta["metavar"])
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", help=meta["help"])
            continue
        if f.name in ("hidden_units", "iaf_hidden_units"):
            kwargs["type"] = _hidden_units
        elif f.name == "likelihood":
            kwargs["type"] = _likelihood
        elif meta["choices"]:
            kwargs["choices"] = _choices(meta["choices"])
            kwargs.pop("metavar")
        elif f.name == "seed":
            kwargs["type"] = _number(int, 0, False, f"an integer from 0 to {MAX_SEED}", MAX_SEED)
        elif meta["low"] is not None:
            kind = int if f.type.startswith("int") else float
            kwargs["type"] = {(int, True): positive_int, (int, False): non_negative_int,
                              (float, True): positive_float,
                              (float, False): non_negative_float}[kind, meta["strict"]]
        parser.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The parser of all commands (``argparse``; errors exit with code 2)."""
    dataset_names = _choices("datasets")

    formatter = _Formatter
    parser = _Parser(prog="tfvae", description="Variational auto-encoders from the command line.",
                     epilog=EXIT_CODES, formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a VAE into a run folder (resumes an interrupted run)",
        formatter_class=formatter, epilog=EXIT_CODES,
        description="Train a VAE and write into --out: model.keras, metrics.json, samples.png,\n"
                    "reconstructions.png and TensorBoard logs (logs/). Re-running the same\n"
                    "command after an interruption resumes after the last finished epoch; for\n"
                    "a finished run it does nothing. Datasets are read from $TFVAE_DATA_DIR,\n"
                    "else data/ (see tfvae.datasets).")
    _config_arguments(train)
    train.add_argument("--out", type=_folder, default=None,
                       help="run folder (default: runs/DATASET)")
    train.add_argument("--overwrite", "--force", action="store_true",
                       help="delete the run in --out and train from scratch")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None,
                       help="Keras verbosity: 0 silent, 1 progress bars, 2 one line per epoch "
                            "(default: 1 on a terminal, else 2)")
    train.set_defaults(handler=_train)

    sample = commands.add_parser(
        "sample", help="draw samples from a trained model into a PNG", formatter_class=formatter,
        epilog=_exit_codes("0", "1 write", "2", "130"),
        description="Write a grid of samples z ~ p(z) decoded to mean images E[x|z] (what\n"
                    "training's samples.png shows), or with --draws to draws x ~ p(x|z).\n"
                    "For a conditional model (train --conditional): --label 3 for a grid of\n"
                    "class 3, --labels all (the default) for one row per class.")
    sample.add_argument("--model", type=Path, required=True,
                        help="a .keras file (e.g. runs/mnist/model.keras)")
    sample.add_argument("-n", "--num", type=positive_int, default=None,
                        help="number of samples; with --labels, per class (default: 64; with "
                             "--labels, 8)")
    condition = sample.add_mutually_exclusive_group()
    condition.add_argument("--label", type=non_negative_int, default=None, metavar="Y",
                           help="conditional models: every sample of class Y")
    condition.add_argument("--labels", type=_labels, default=None, metavar="all|Y,Y,...",
                           help="conditional models: one row per class (all, or the classes "
                                "given)")
    sample.add_argument("--out", type=_output(".png"), default=Path("samples.png"),
                        help="PNG file")
    sample.add_argument("--seed", type=int, default=None,
                        help="same seed, same images (default: random)")
    kind = sample.add_mutually_exclusive_group()
    kind.add_argument("--draws", action="store_true",
                      help="draw x ~ p(x|z) (binary images for Bernoulli pixels) instead of the "
                           "mean images E[x|z]")
    kind.add_argument("--mean", action="store_true", help="mean images E[x|z] (the default)")
    sample.add_argument("--ncols", type=positive_int, default=None,
                        help="images per row (default: about square)")
    sample.set_defaults(handler=_sample)

    evaluate = commands.add_parser(
        "evaluate", help="metrics of a trained model on a dataset split (printed and JSON)",
        formatter_class=formatter, epilog=_exit_codes("0", "1 data", "2", "130"))
    _data_arguments(evaluate, dataset_names)
    evaluate.add_argument("--nll-samples", type=non_negative_int, default=0, metavar="K",
                          help="also estimate the NLL with K importance samples (a conditional "
                               "model: -log p(x|y))")
    evaluate.add_argument("--limit", type=positive_int, default=None, metavar="N",
                          help="evaluate a fixed random subset of N examples")
    evaluate.add_argument("--batch-size", type=positive_int, default=100, metavar="B",
                          help="examples per step")
    evaluate.add_argument("--out", type=_output(), default=None,
                          help="JSON file (default: evaluation-DATASET-SPLIT.json beside the "
                               "model)")
    evaluate.set_defaults(handler=_evaluate)

    interpolate = commands.add_parser(
        "interpolate", help="decode a straight line in z between two images into a PNG strip",
        formatter_class=formatter, epilog=_exit_codes("0", "1 data", "2", "130"))
    _data_arguments(interpolate, dataset_names)
    interpolate.add_argument("--index-a", type=non_negative_int, default=0, metavar="I",
                             help="first image: its index in the split")
    interpolate.add_argument("--index-b", type=non_negative_int, default=1, metavar="J",
                             help="last image")
    interpolate.add_argument("--steps", type=_steps, default=10,
                             help="images in the strip, both ends included")
    interpolate.add_argument("--out", type=_output(".png"), default=Path("interpolation.png"),
                             help="PNG file")
    interpolate.set_defaults(handler=_interpolate)
    return parser


def _data_arguments(parser, names):
    parser.add_argument("--model", type=Path, required=True,
                        help="a .keras file (e.g. runs/mnist/model.keras)")
    parser.add_argument("--dataset", choices=names, default=None,
                        help="(default: the dataset of the run that wrote the model)")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test",
                        help="the dataset's splits, as in tfvae.datasets and 'tfvae train'")


# ------------------------------------------------------------------ checks
def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that a file can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        reason = error.strerror or error
        raise UsageError(f"cannot write to the folder {path} ({reason}).") from None
    return path


def _load_model(path: Path):
    from tfvae.checkpoints import ModelFileError, load_model

    try:
        return load_model(path)
    except ModelFileError as error:
        raise UsageError(str(error)) from None


def _dataset_of(args) -> str:
    """``--dataset``, else the dataset in the run_config.json beside the model."""
    if args.dataset:
        return args.dataset
    from tfvae.runs import RUN_CONFIG, RunFolder, RunFolderError

    try:
        stored = RunFolder(args.model.parent).stored_config() or {}
    except RunFolderError:
        stored = {}
    if "dataset" not in stored:
        raise UsageError(f"no --dataset given and no {RUN_CONFIG} beside {args.model} names one.")
    return stored["dataset"]


def _check_shape(model, x, dataset):
    if tuple(x.shape[1:]) != tuple(model.data_shape):
        raise UsageError(f"the model expects images of shape {tuple(model.data_shape)}, but "
                         f"{dataset} has {tuple(x.shape[1:])}.")


def _print_metrics(metrics: dict) -> None:
    for name in ("loss", "reconstruction", "kl", "elbo", "iw_elbo", "nll"):
        if name in metrics:
            print(f"  {name:>15}: {metrics[name]:.4f}")


# ---------------------------------------------------------------- commands
def _train(args) -> int:
    from tfvae import distribute, runs, training

    try:
        config = TrainConfig(**{f.name: getattr(args, f.name)
                                for f in dataclasses.fields(TrainConfig)})
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        training.check_memory(config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    out = writable_dir(args.out or Path("runs") / args.dataset)
    status = "new" if args.overwrite else runs.RunFolder(out).status(config.identity(),
                                                                     TrainConfig.defaults())
    verbose = args.verbose if args.verbose is not None else 1 if sys.stdout.isatty() else 2
    metrics = training.train(config, out, overwrite=args.overwrite, verbose=verbose)
    if status == "complete":
        nll = (f" Test NLL ({config.nll_samples} importance samples): "
               f"{metrics['test']['nll']:.4f}." if config.nll_samples else "")
        print(f"{out} already holds this finished run ({config.epochs} epochs); it was not "
              f"trained again.{nll} Its metrics are in {out / runs.METRICS}; pass --overwrite "
              f"to train again.")
        return EXIT_OK
    for split in ("train", "validation", "test"):
        print(f"{split} (nats per example):")
        _print_metrics(metrics[split])
    if not distribute.is_chief():  # TF_CONFIG: another worker wrote the run folder
        print(f"This worker trained with the cluster's chief, which wrote {out}.")
        return EXIT_OK
    print(f"Wrote {out}: {runs.MODEL}, {runs.METRICS}, {runs.SAMPLES_PNG}, "
          f"{runs.RECONSTRUCTIONS_PNG}, {runs.LOGS}/ (tensorboard --logdir {out / runs.LOGS})")
    return EXIT_OK


def _sample_labels(args, model) -> tuple[list | None, int, int | None]:
    """``(labels, n, ncols)`` of ``tfvae sample``: labels None for an
    unconditional model; one row per class for ``--labels``."""
    classes = getattr(model, "num_classes", None)
    asked = "--label" if args.label is not None else "--labels" if args.labels else None
    if classes is None:
        if asked:
            raise UsageError(f"{asked} is for conditional models (train --conditional); "
                             f"{args.model} is unconditional.")
        return None, args.num or 64, args.ncols
    if args.label is not None:
        rows = [args.label]
    else:
        rows = list(range(classes)) if args.labels in (None, "all") else list(args.labels)
    bad = [y for y in rows if not 0 <= y < classes]
    if bad:
        raise UsageError(f"label {bad[0]} is out of range: {args.model} has {classes} classes, "
                         f"labels 0 to {classes - 1}.")
    if args.label is not None:
        n = args.num or 64
        return [args.label] * n, n, args.ncols
    per_row = args.num or 8
    return [y for y in rows for _ in range(per_row)], per_row * len(rows), args.ncols or per_row


def _sample(args) -> int:
    from tfvae import plot
    from tfvae.seeds import stateless_seed

    writable_dir(args.out.parent)
    model = _load_model(args.model)
    labels, n, ncols = _sample_labels(args, model)
    conditional = {} if labels is None else {"labels": labels}
    images = model.sample(n, seed=stateless_seed(args.seed), mean=not args.draws,
                          **conditional).numpy()
    plot.save_image_grid(images, args.out, ncols=ncols)
    what = "draws x ~ p(x|z)" if args.draws else "mean images E[x|z]"
    if labels is None:
        print(f"Wrote {n} {what} to {args.out}")
    elif args.label is not None:
        print(f"Wrote {n} {what.replace('|z', '|z,y')} of class {args.label} to {args.out}")
    else:
        rows = list(dict.fromkeys(labels))
        print(f"Wrote {n} {what.replace('|z', '|z,y')} to {args.out}, one row per class: "
              f"{', '.join(map(str, rows))}")
    return EXIT_OK


def _refuse_conditional(model, what: str) -> None:
    if getattr(model, "num_classes", None) is not None:
        raise UsageError(f"{what} is for unconditional models only (yet); this model is "
                         f"conditional ({model.num_classes} classes).")


def _evaluate(args) -> int:
    from tfvae import datasets, training
    from tfvae.files import write_json

    writable_dir(args.model.parent if args.out is None else args.out.parent)
    model = _load_model(args.model)
    dataset = _dataset_of(args)
    out = args.out or args.model.parent / f"evaluation-{dataset}-{args.split}.json"
    x, y = datasets.load(dataset, args.split, args.limit)
    _check_shape(model, x, dataset)
    conditional = getattr(model, "num_classes", None) is not None
    if conditional and (y is None or y.max() >= model.num_classes):
        raise UsageError(f"this model is conditional ({model.num_classes} classes), but {dataset} "
                         f"has {'no labels' if y is None else f'labels up to {y.max()}'}.")
    metrics = training.evaluate(model, x, args.batch_size, args.nll_samples,
                                verbose=1 if sys.stdout.isatty() else 2,
                                labels=y if conditional else None)
    metrics.update(model=str(args.model), dataset=dataset, split=args.split, examples=len(x))
    print(f"{dataset} {args.split} ({len(x)} examples, nats per example):")
    _print_metrics(metrics)
    write_json(out, metrics)
    print(f"Wrote {out}")
    return EXIT_OK


def _interpolate(args) -> int:
    from tfvae import datasets, latent, plot

    writable_dir(args.out.parent)
    model = _load_model(args.model)
    _refuse_conditional(model, "interpolate")
    dataset = _dataset_of(args)
    x = datasets.load(dataset, args.split)[0]
    _check_shape(model, x, dataset)
    for name in ("index_a", "index_b"):
        if getattr(args, name) >= len(x):
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} is out of range: "
                             f"{dataset} {args.split} has {len(x)} images (0 to {len(x) - 1}).")
    strip = latent.interpolate(model, x[args.index_a], x[args.index_b], args.steps)
    plot.save_image_grid(strip, args.out, ncols=args.steps)
    print(f"Wrote {args.steps} images from {dataset} {args.split} #{args.index_a} to "
          f"#{args.index_b} to {args.out}")
    return EXIT_OK


# -------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a bad argument (2, message printed)
        return int(stop.code or 0)
    if args.command is None:
        print("tfvae: error: a COMMAND is required (see tfvae --help)", file=sys.stderr)
        return EXIT_USAGE

    quiet_tensorflow()
    from tfvae.callbacks import TrainingDiverged
    from tfvae.checkpoints import ModelFileError
    from tfvae.datasets import DatasetCorruptError, DatasetUnavailableError
    from tfvae.runs import RunFolderError

    prog = f"tfvae {args.command}"
    try:
        with _sigterm_as_interrupt():
            return args.handler(args)
    except (UsageError, RunFolderError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (DatasetUnavailableError, DatasetCorruptError, TrainingDiverged,
            ModelFileError) as error:  # a user's --model file is a UsageError (2) above
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as error:  # disk full, file too large, ...: saves are atomic
        resume = " Re-run the same command to resume." if args.command == "train" else ""
        print(f"{prog}: error: {error}. Files written before it are intact (every save is "
              f"atomic).{resume}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        hint = " Re-run the same command to resume." if args.command == "train" else ""
        print(f"\n{prog}: interrupted.{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill``, a job scheduler) stops a command as Ctrl-C does."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
