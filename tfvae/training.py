"""Build, train and evaluate a VAE from a :class:`tfvae.config.TrainConfig`.

:func:`train` trains into a run folder (:mod:`tfvae.runs`: its files, resume,
lock) and returns the final metrics. Calling it again with the same config
resumes after the last finished epoch, and returns at once for a finished run.
Data flow::

    TrainConfig -> load_data (tfvae.datasets, splits train/valid/test)
                -> build_vae (tfvae.networks, tfvae.model.VAE, compile defaults)
                -> VAE.fit with tfvae.callbacks (NaN guard, checkpoints, TensorBoard)
                -> evaluate, save_pictures -> RunFolder.finish (metrics.json)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfvae import callbacks as cbs
from tfvae import checkpoints, datasets, distribute, flows, networks, plot, runs
from tfvae.config import DEFAULT_IAF_HIDDEN_UNITS, TrainConfig
from tfvae.files import read_json, write_json
from tfvae.model import VAE
from tfvae.optimizers import FusedAdam
from tfvae.priors import get_prior
from tfvae.seeds import stateless_seed


def load_data(config: TrainConfig) -> dict[str, np.ndarray]:
    """The ``train``, ``valid`` and ``test`` images of ``config.dataset``, and
    for a ``conditional`` run their int labels ``[N]`` as ``train_labels``,
    ``valid_labels``, ``test_labels``.

    With ``dynamic_binarization`` the training images stay grey (each batch
    is binarized afresh, see :func:`make_training_data`) while validation and
    test images are binarized once (seed 0).
    """
    data = {}
    for split in datasets.SPLITS:
        binarized = config.dynamic_binarization and split != "train"
        data[split], labels = datasets.load(config.dataset, split, limit=config.limit,
                                            seed=config.seed, binarized=binarized)
        if config.conditional:
            data[f"{split}_labels"] = labels
    return data


def make_training_data(config: TrainConfig, x: np.ndarray, labels: np.ndarray | None = None):
    """What ``fit`` trains on: the array, or a ``tf.data`` pipeline when the
    images are dynamically binarized or come with ``labels`` (``(x, y)`` batches)."""
    if not config.dynamic_binarization and labels is None:
        return x
    return datasets.make_dataset(x, batch_size=config.batch_size, seed=config.seed,
                                 dynamic_binarization=config.dynamic_binarization, labels=labels)


def num_classes(config: TrainConfig) -> int | None:
    """Classes a ``conditional`` run conditions on (from the dataset record), else None."""
    return len(datasets.get(config.dataset).label_names) if config.conditional else None


def steps_per_epoch(config: TrainConfig, num_examples: int) -> int:
    """Training steps of one epoch (the last batch may be smaller)."""
    return -(-num_examples // config.batch_size)


def build_vae(config: TrainConfig, data_shape: tuple[int, ...]) -> VAE:
    """A compiled VAE for ``config`` (weights initialised from ``config.seed``),
    with :meth:`tfvae.VAE.compile`'s defaults, as everywhere else."""
    keras.utils.set_random_seed(config.seed)
    classes = num_classes(config)
    encoder, decoder = networks.build_networks(config.network, data_shape, config.latent_dim,
                                               hidden_units=config.hidden_units,
                                               condition_dim=classes or 0)
    model = VAE(encoder, decoder, config.latent_dim, likelihood=config.likelihood,
                beta=config.beta, kl_warmup_steps=config.kl_warmup, seed=config.seed,
                objective=config.objective, k=config.k, free_bits=config.free_bits,
                num_classes=classes, prior=get_prior(config.prior, config.prior_components),
                flow=build_flow(config))
    model.compile(optimizer=FusedAdam(config.learning_rate))
    return model


def _iaf_hidden_units(config: TrainConfig) -> tuple[int, ...]:
    return config.iaf_hidden_units or DEFAULT_IAF_HIDDEN_UNITS


def build_flow(config: TrainConfig) -> flows.InverseAutoregressiveFlow | None:
    """The IAF posterior's flow that ``config`` asks for (``iaf_steps``), or None."""
    if not config.iaf_steps:
        return None
    return flows.InverseAutoregressiveFlow(config.iaf_steps, _iaf_hidden_units(config))


def evaluate(model: VAE, x: np.ndarray, batch_size: int = 100, nll_samples: int = 0,
             verbose: int = 0, labels: np.ndarray | None = None) -> dict[str, float]:
    """Mean ``loss``, ``reconstruction``, ``kl``, ``elbo`` over ``x`` (nats per example;
    a conditional model needs the ``labels`` of ``x``).

    With ``nll_samples > 0`` also ``nll``: minus the mean importance-sampled
    log p(x) (conditional: log p(x|y)) with that many samples
    (:meth:`VAE.log_likelihood`), whose progress is shown when ``verbose``.
    """
    metrics = model.evaluate(x, labels, batch_size=batch_size, verbose=0, return_dict=True)
    metrics = {k: float(v) for k, v in metrics.items()}
    if nll_samples > 0:
        metrics.update(_nll(model, x, batch_size, nll_samples, verbose, labels))
    return metrics


def _nll(model: VAE, x: np.ndarray, batch_size: int, nll_samples: int, verbose: int,
         labels: np.ndarray | None = None) -> dict:
    if verbose:
        given = "" if labels is None else " given its label"
        print(f"Estimating log p(x{'|y' if given else ''}) of {len(x)} examples{given} with "
              f"{nll_samples} importance samples each", flush=True)
    log_px = model.log_likelihood(x, num_samples=nll_samples, batch_size=batch_size, seed=0,
                                  verbose=verbose, y=labels)
    return {"nll": float(-np.mean(log_px)), "nll_samples": int(nll_samples)}


def parameter_bytes(config: TrainConfig) -> int:
    """Memory that training ``config`` needs at least: its float32 parameters,
    their gradients and Adam's two moments (counted without building the model)."""
    shape = datasets.get(config.dataset).shape
    flow = flows.count_parameters(config.latent_dim, config.iaf_steps, _iaf_hidden_units(config))
    return 16 * (flow + networks.count_parameters(config.network, shape, config.latent_dim,
                                                  config.hidden_units, num_classes(config) or 0))


def physical_memory() -> int | None:
    """Bytes of memory of this machine, or None where the OS does not say (POSIX only)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(config: TrainConfig) -> None:
    """Refuse a model whose parameters cannot fit in half of this machine's memory.

    Raises:
        ValueError: with the estimate and the machine's memory.
    """
    memory = physical_memory()
    need = parameter_bytes(config)
    if memory is not None and need > memory // 2:
        raise ValueError(
            f"this model needs at least {need / 2**30:.1f} GiB for its parameters, gradients "
            f"and optimizer state (latent_dim={config.latent_dim}, network={config.network}), "
            f"more than half of this machine's {memory / 2**30:.1f} GiB of memory. Choose a "
            f"smaller --latent-dim or --hidden-units.")


def save_pictures(model: VAE, images: np.ndarray, out: str | os.PathLike, seed: int = 0,
                  num_samples: int = 64, labels: np.ndarray | None = None) -> None:
    """Write ``samples.png`` (E[x|z], z ~ p(z)) and ``reconstructions.png``.

    ``reconstructions.png`` alternates rows: 8 data images, then their
    reconstructions E[x|z=mu]. For a conditional model (``labels``: those of
    ``images``) ``samples.png`` has one row of 8 per class instead.
    """
    run = runs.RunFolder(out)
    sample_labels = None
    if model.num_classes is not None:
        sample_labels = np.repeat(np.arange(model.num_classes), 8)
        num_samples = len(sample_labels)
    samples = model.sample(num_samples, seed=stateless_seed(seed), mean=True,
                           labels=sample_labels).numpy()
    plot.save_image_grid(samples, run / runs.SAMPLES_PNG, ncols=8)
    keep = len(images) // 8 * 8
    images, labels = images[:keep], (None if labels is None else labels[:keep])
    recon = model.reconstruct(images, labels).numpy()
    rows = np.stack([images.reshape(-1, 8, *images.shape[1:]),
                     recon.reshape(-1, 8, *images.shape[1:])], axis=1)
    plot.save_image_grid(rows.reshape(-1, *images.shape[1:]), run / runs.RECONSTRUCTIONS_PNG,
                         ncols=8)


def train(config: TrainConfig, out: str | os.PathLike, overwrite: bool = False,
          verbose: int = 1, callbacks: list | None = None) -> dict:
    """Train ``config`` into the run folder ``out`` (see :mod:`tfvae.runs`).

    Args:
        config: what to train.
        out: run folder (created if needed); refused if it is not empty and
            holds no run of ours.
        overwrite: delete a previous run of ours in ``out`` first (once the
            data loaded); files that are not ours are never touched.
        verbose: Keras verbosity (1: progress bars).
        callbacks: extra Keras callbacks.

    Returns:
        The contents of ``metrics.json``: for each of ``train``,
        ``validation``, ``test`` the mean loss, reconstruction, kl and elbo
        (nats per example; ``test`` also ``nll`` if ``config.nll_samples``),
        plus ``history`` (per-epoch logs), ``epochs``, ``seconds``,
        ``completed``.

    A finished run is not trained again; if ``config.nll_samples`` asks for
    a test NLL that its ``metrics.json`` lacks, it is estimated and added.

    Raises:
        ValueError: the model cannot fit in memory (:func:`check_memory`).
        runs.RunFolderError: ``out`` is not ours, holds another run (and not
            ``overwrite``), is in use, or its progress is ambiguous (then
            nothing in it was changed).
        checkpoints.ModelFileError: the run's checkpoint cannot be loaded.
        callbacks.TrainingDiverged: the loss became NaN/inf (the last good
            model is kept).
        datasets.DatasetUnavailableError, datasets.DatasetCorruptError.
    """
    check_memory(config)
    strategy = distribute.cluster_strategy()
    if strategy is not None:
        return _train_in_cluster(config, out, strategy, overwrite, verbose, callbacks)
    run = runs.RunFolder(out)
    identity = config.identity()
    run.check_ours()  # before the lock file is made in it
    with run.locked():
        status = "new" if overwrite and run.stored_config() is not None else run.status(
            identity, TrainConfig.defaults())
        if status == "complete":
            return _finished(config, run, verbose)
        data = load_data(config)  # before deleting anything
        steps = steps_per_epoch(config, len(data["train"]))
        resume = None if status == "new" else run.resume_point(steps)  # may refuse: unchanged
        run.start(identity, overwrite=overwrite)
        return _fit(config, run, data, resume, verbose, callbacks)


def _train_in_cluster(config: TrainConfig, out: str | os.PathLike, strategy,
                      overwrite: bool, verbose: int, callbacks: list | None) -> dict:
    """:func:`train` on one worker of the cluster that TF_CONFIG describes.

    Every worker runs this with the same ``out``. The chief owns the run
    folder (lock, marker, checkpoints, pictures, metrics); the others write
    into a private temporary folder (:func:`tfvae.distribute.write_folder`).
    Progress is resumed from the chief's ``backup/`` folder, which every
    worker reads (:class:`tfvae.callbacks.BackupAndRestore`): on one machine
    that is automatic; workers on several machines need ``out`` on a shared
    file system to resume, or to see that a run is finished.
    """
    chief_run = runs.RunFolder(out)
    chief = distribute.is_chief(strategy)
    identity = config.identity()
    if chief:
        chief_run.check_ours()
    status = "new" if overwrite and chief_run.stored_config() is not None else chief_run.status(
        identity, TrainConfig.defaults())
    if status == "complete":
        return read_json(chief_run / runs.METRICS)
    data = load_data(config)
    lock = chief_run.locked() if chief else contextlib.nullcontext()
    with lock, distribute.write_folder(out, strategy) as folder:
        run = runs.RunFolder(folder)
        run.start(identity, overwrite=overwrite and chief)
        backup = cbs.BackupAndRestore(chief_run / runs.BACKUP)
        return _fit(config, run, data, None, verbose, callbacks, strategy, backup)


def _with_labels(data: dict, split: str):
    """The images of ``split``, or ``(images, labels)`` for a conditional run."""
    labels = data.get(f"{split}_labels")
    return data[split] if labels is None else (data[split], labels)


def _finished(config: TrainConfig, run: runs.RunFolder, verbose: int) -> dict:
    """The metrics of a finished run, with the test NLL estimated (and stored)
    if ``config.nll_samples`` asks for one that ``metrics.json`` lacks."""
    metrics = read_json(run / runs.METRICS)
    if config.nll_samples and metrics["test"].get("nll_samples") != config.nll_samples:
        model = checkpoints.load_model(run / runs.MODEL)
        x, labels = datasets.load(config.dataset, "test", limit=config.limit, seed=config.seed,
                                  binarized=config.dynamic_binarization)
        metrics["test"].update(_nll(model, x, config.batch_size, config.nll_samples, verbose,
                                    labels if config.conditional else None))
        metrics["config"]["nll_samples"] = config.nll_samples
        write_json(run / runs.METRICS, metrics)
    return metrics


def _fit(config: TrainConfig, run: runs.RunFolder, data: dict, resume: runs.ResumePoint | None,
         verbose: int, callbacks: list | None, strategy=None,
         backup: cbs.BackupAndRestore | None = None) -> dict:
    """Train (from ``resume``, or from ``backup`` in a cluster), evaluate,
    write pictures and metrics into ``run``."""
    chief = distribute.is_chief(strategy)
    if resume is None:
        with (strategy or tf.distribute.get_strategy()).scope():
            model, initial_epoch, history = build_vae(config, data["train"].shape[1:]), 0, {}
        state = backup.saved_state(backup.backup_dir) if backup is not None else None
        if state is not None:
            initial_epoch, history = int(state["epoch"]), state["history"]
            print(f"Resuming {backup.backup_dir} after epoch {initial_epoch} of "
                  f"{config.epochs} ({distribute.worker_label(strategy)}).", flush=True)
    else:
        try:
            model = checkpoints.load_model(resume.model_file)
        except checkpoints.ModelFileError as error:
            raise checkpoints.ModelFileError(
                f"cannot resume {run.path}: {error}. Pass --overwrite (overwrite=True) to start "
                f"the run again.") from error
        initial_epoch, history = resume.epoch, resume.history
        print(f"Resuming {run.path} after epoch {initial_epoch} of {config.epochs} "
              f"({resume.model_file}).", flush=True)
        keras.utils.set_random_seed(config.seed + initial_epoch)

    saver = cbs.EpochCheckpoint(run, history=history)
    budget = cbs.TimeBudget(config.minutes, (history.get("train_minutes") or [0.0])[-1])
    valid_labels = data.get("valid_labels")
    fit_callbacks = [budget, saver,
                     cbs.ImageSummaries(run / runs.LOGS / "images", data["valid"][:8],
                                        seed=config.seed,
                                        labels=None if valid_labels is None else valid_labels[:8]),
                     keras.callbacks.TensorBoard(run / runs.LOGS, write_graph=False)]
    if config.final_learning_rate is not None:  # after the budget, whose minutes it reads
        fit_callbacks.insert(1, cbs.LearningRateDecay(config.learning_rate,
                                                      config.final_learning_rate,
                                                      config.epochs, budget))
    if backup is not None:
        fit_callbacks.insert(0, backup)  # restores weights before the others see the model
    start = time.time()
    # In a cluster fit always runs: the backup's weights are loaded as it starts.
    if initial_epoch < config.epochs or backup is not None:
        try:
            train_data = make_training_data(config, data["train"], data.get("train_labels"))
            model.fit(train_data, validation_data=_with_labels(data, "valid"),
                      epochs=config.epochs, initial_epoch=initial_epoch,
                      batch_size=config.batch_size if isinstance(train_data, np.ndarray) else None,
                      shuffle=isinstance(train_data, np.ndarray),  # a pipeline shuffles itself
                      callbacks=fit_callbacks + list(callbacks or []),
                      verbose=verbose)
        except cbs.TrainingDiverged as diverged:
            good = saver.last_saved_epoch or initial_epoch
            kept = (f"The model after epoch {good} is kept in {run / runs.MODEL}." if good else
                    "No epoch finished, so no model was saved.")
            raise cbs.TrainingDiverged(f"Training stopped: {diverged} {kept}") from None

    if not (run / runs.MODEL).exists():
        checkpoints.save_model(model, run / runs.MODEL)
    metrics = {
        "train": evaluate(model, data["train"], config.batch_size,
                          labels=data.get("train_labels")),
        "validation": evaluate(model, data["valid"], config.batch_size,
                               labels=data.get("valid_labels")),
        # The estimate of log p(x) and the pictures are the chief's alone (no collectives).
        "test": evaluate(model, data["test"], config.batch_size,
                         config.nll_samples if chief else 0, verbose,
                         labels=data.get("test_labels")),
    }
    test_labels = data.get("test_labels")
    if chief:
        save_pictures(model, data["test"][:32], run.path, seed=config.seed,
                      labels=None if test_labels is None else test_labels[:32])
    epochs_trained = len(saver.history.get("loss", [])) or initial_epoch
    metrics.update(history=saver.history, epochs=epochs_trained,
                   config=dataclasses.asdict(config), seconds=round(time.time() - start, 1),
                   stopped_by_time_budget=budget.stopped, completed=True)
    run.finish(metrics)
    return metrics
