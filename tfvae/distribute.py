"""Training on several workers: the strategy that TF_CONFIG describes, and who writes.

With ``TF_CONFIG`` set (one JSON per worker process: the cluster's addresses
and this worker's place in it; see README), every worker runs the same
program under :class:`tf.distribute.MultiWorkerMirroredStrategy`. All of them
take part in every collective step (training, evaluation, saving); only the
chief writes where people look (the run folder). The others write to a
private temporary folder that is deleted afterwards, so nothing they write can
clash with the chief's files (TensorFlow's own convention for multi-worker
Keras).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf


class ClusterConfigError(ValueError):
    """TF_CONFIG is not a cluster description that this worker can join."""


def cluster_spec_from_environment() -> dict | None:
    """The parsed ``TF_CONFIG``, or None when it is unset or names no cluster.

    Raises:
        ClusterConfigError: TF_CONFIG is not JSON, or lacks ``cluster`` /
            ``task`` entries that fit together.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({error}): {text[:200]!r}") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not cluster:
        return None
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ClusterConfigError(
            'TF_CONFIG has a "cluster" but no "task": {"type": "worker", "index": N}; '
            f"got {text[:200]!r}.")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ClusterConfigError(
            f"TF_CONFIG task {task} is not in its cluster {cluster}: the cluster needs a "
            f"{task['type']!r} list with an entry at index {task['index']}.")
    return config


def cluster_strategy() -> tf.distribute.Strategy | None:
    """``MultiWorkerMirroredStrategy`` when TF_CONFIG describes a cluster, else None."""
    if cluster_spec_from_environment() is None:
        return None
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes the shared files: True without a cluster;
    in one, the ``chief`` task, or worker 0 when the cluster names no chief.

    The cluster is the strategy's (``strategy`` or the current one), else the
    one that TF_CONFIG describes.
    """
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type:
        task_type, task_id = resolver.task_type, resolver.task_id
        cluster = resolver.cluster_spec().as_dict()
    else:
        config = cluster_spec_from_environment()
        if config is None:
            return True
        task_type, task_id = config["task"]["type"], int(config["task"]["index"])
        cluster = config["cluster"]
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def worker_label(strategy: tf.distribute.Strategy | None = None) -> str:
    """``"worker 1"`` etc. for messages; ``""`` without a cluster."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return ""
    return f"{resolver.task_type} {resolver.task_id}"


@contextlib.contextmanager
def write_folder(path: str | os.PathLike,
                 strategy: tf.distribute.Strategy | None = None) -> Iterator[Path]:
    """The folder this worker writes to: ``path`` for the chief, a private
    temporary folder (deleted on exit) for every other worker."""
    if is_chief(strategy):
        yield Path(path)
        return
    private = Path(tempfile.mkdtemp(prefix="tfvae-worker-"))
    try:
        yield private
    finally:
        shutil.rmtree(private, ignore_errors=True)


def step_outputs(metrics: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """A train/test step's metrics, shaped for Keras's reduction across workers.

    Keras 3 averages a multi-worker step's outputs with
    ``strategy.reduce("MEAN", value, axis=0)``, which fails on the scalar
    metrics a step returns ("Invalid reduction dimension 0"). Under a
    multi-worker strategy each value gets a length-1 axis, which that
    reduction averages away; elsewhere the metrics pass unchanged.
    """
    strategy = tf.distribute.get_strategy()
    multi_worker = (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                    and strategy.extended._in_multi_worker_mode())
    if not multi_worker:
        return metrics
    return {name: tf.reshape(value, [1]) for name, value in metrics.items()}


def xla_problem(strategy: tf.distribute.Strategy | None = None) -> str | None:
    """Why XLA (``jit_compile=True``) cannot train under ``strategy`` here, or None.

    TensorFlow cannot compile a multi-worker strategy's collective operations
    with XLA on CPU devices ("Collectives are not yet implemented for CPU
    devices when compiling with XLA"), so a training step would fail at its
    first call.
    """
    strategy = strategy or tf.distribute.get_strategy()
    multi_worker = (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                    and strategy.extended._in_multi_worker_mode())
    if multi_worker and not tf.config.list_logical_devices("GPU"):
        return ("jit_compile=True cannot train under MultiWorkerMirroredStrategy on CPUs: "
                "TensorFlow does not compile collective operations with XLA on CPU devices. "
                "Compile with jit_compile=False or 'auto' (XLA only on GPUs).")
    return None


def optimizer_loss(model, loss: tf.Tensor) -> tf.Tensor:
    """``loss`` (a mean over this replica's batch) as a train step differentiates it.

    Divided by the number of replicas in sync: each replica sees 1/R of the
    global batch and the optimizer sums the replicas' gradients, so the sum
    is the gradient of the global-batch mean. Then scaled by the optimizer's
    loss scale (mixed_float16). Call it inside the ``GradientTape``.
    """
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return model.optimizer.scale_loss(loss / replicas)


def apply_gradients(model, tape: tf.GradientTape, scaled_loss: tf.Tensor,
                    gradients: list | None = None) -> None:
    """One optimizer update of ``model``'s trainable variables from ``tape``
    (or from ``gradients`` already taken, one per variable: DReG's)."""
    if gradients is None:
        gradients = tape.gradient(scaled_loss, model.trainable_variables)
    model.optimizer.apply(gradients, model.trainable_variables)
