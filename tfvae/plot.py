"""Figures for VAEs: image grids, manifolds, latent scatter plots, curves, KL per dimension.

Every function returns a ``matplotlib.figure.Figure`` built without
``pyplot`` (no global state, nothing shown): in Jupyter, leave the figure as
the last expression of a cell (or call ``display(fig)``); elsewhere call
``fig.savefig(path)``. Pass ``ax=`` to draw into an existing axes instead.

Images are arrays in [0, 1] of shape ``[N, H, W]``, ``[N, H, W, 1]`` (grey)
or ``[N, H, W, 3]`` (colour).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tfvae import latent
from tfvae.files import atomic_path
from tfvae.seeds import subset_indices

PAD_VALUE = 1.0  # white lines between grid cells


def tile(images, ncols: int | None = None, pad: int = 1, pad_value: float = PAD_VALUE
         ) -> np.ndarray:
    """Arrange images in a grid, row by row, ``pad`` pixels apart.

    Args:
        images: ``[N, H, W]``, ``[N, H, W, 1]`` or ``[N, H, W, 3]`` in [0, 1].
        ncols: images per row (default ``ceil(sqrt(N))``).
        pad: pixels of ``pad_value`` between cells (not around the border).

    Returns:
        ``[rows*H + (rows-1)*pad, ncols*W + (ncols-1)*pad]`` (grey) or with a
        trailing 3 (colour), float32; image ``k`` sits at row ``k // ncols``,
        column ``k % ncols``; unused cells are ``pad_value``.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(
            f"images have shape {images.shape}; expected [N, H, W], [N, H, W, 1] or [N, H, W, 3]."
        )
    n, h, w = images.shape[:3]
    if n == 0:
        raise ValueError("images is empty; expected at least one image.")
    ncols = math.ceil(math.sqrt(n)) if ncols is None else int(ncols)
    if ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols}.")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}.")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * h + (nrows - 1) * pad, ncols * w + (ncols - 1) * pad)
                  + images.shape[3:], pad_value, dtype=np.float32)
    for k, image in enumerate(images):
        r, c = divmod(k, ncols)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
    return out


def _figure_and_axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, dpi=80, layout="constrained")
    return fig, fig.add_subplot()


def _show_image(ax, array, title):
    grey = array.ndim == 2
    ax.imshow(np.clip(array, 0.0, 1.0), cmap="gray" if grey else None, vmin=0.0, vmax=1.0,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def image_grid(images, ncols: int | None = None, ax=None, title: str | None = None) -> Figure:
    """Show images in a grid (see :func:`tile`); returns the Figure."""
    array = tile(images, ncols)
    height, width = array.shape[:2]
    inch = min(1 / 40, 7.0 / max(height, width))  # 2 screen pixels per pixel, at most 7 in
    fig, ax = _figure_and_axes(ax, (max(width * inch, 1.0), height * inch + (0.3 if title else 0)))
    _show_image(ax, array, title)
    return fig


def save_image_grid(images, path: str | os.PathLike, ncols: int | None = None) -> None:
    """Write the grid of :func:`tile` to ``path`` as a PNG, one pixel per pixel,
    atomically (:func:`tfvae.files.atomic_path`)."""
    import matplotlib.image

    array = np.clip(tile(images, ncols), 0.0, 1.0)
    with atomic_path(path, suffix=".png") as tmp:
        matplotlib.image.imsave(tmp, array, cmap="gray" if array.ndim == 2 else None,
                                vmin=0.0, vmax=1.0, format="png")


def interpolation_strip(images, ax=None, title: str | None = None) -> Figure:
    """Images ``[steps, H, W(, C)]`` in one row (e.g. :func:`tfvae.latent.interpolate`)."""
    images = np.asarray(images)
    return image_grid(images, ncols=len(images), ax=ax, title=title)


def manifold(model, n: int = 20, low: float = 0.05, high: float = 0.95, ax=None,
             title: str | None = None) -> Figure:
    """The learned 2-D manifold (Kingma & Welling 2013, fig. 4).

    Decodes an ``n x n`` grid of z through the prior's inverse CDF
    (:func:`tfvae.latent.decode_grid`); z_1 grows to the right, z_2 upwards.
    """
    images = latent.decode_grid(model, n, low, high)
    fig = image_grid(images.reshape(n * n, *images.shape[2:]), ncols=n, ax=ax, title=title)
    return fig


def latent_scatter(z, labels=None, ax=None, title: str | None = None,
                   class_names: Sequence[str] | None = None, max_points: int = 5000,
                   seed: int = 0) -> Figure:
    """Scatter plot of 2-D codes ``z`` ``[N, 2]``, coloured by integer ``labels`` ``[N]``.

    At most ``max_points`` points (a fixed random subset) are drawn.
    """
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z has shape {z.shape}; expected [N, 2] (2-D latent codes).")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(z),):
            raise ValueError(f"labels have shape {labels.shape}; expected ({len(z)},).")
    if len(z) > max_points:
        keep = subset_indices(len(z), max_points, seed)
        z = z[keep]
        labels = None if labels is None else labels[keep]
    fig, ax = _figure_and_axes(ax, (4.5, 4.0))
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=3, alpha=0.6)
    else:
        points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7,
                            vmin=-0.5, vmax=9.5)
        cbar = fig.colorbar(points, ax=ax, ticks=range(10))
        if class_names is not None:
            cbar.ax.set_yticklabels(class_names)
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_aspect("equal", adjustable="datalim")
    if title:
        ax.set_title(title)
    return fig


def training_curves(history: Mapping[str, Sequence[float]] | object,
                    metrics: Sequence[str] = ("reconstruction", "kl"),
                    title: str | None = None) -> Figure:
    """One panel per metric, training and (if present) ``val_`` values per epoch.

    Args:
        history: a ``keras.callbacks.History`` or its ``.history`` dict.
        metrics: names of logged metrics, e.g. ``("loss", "reconstruction", "kl")``.
    """
    logs = getattr(history, "history", history)
    missing = [m for m in metrics if m not in logs]
    if missing:
        raise ValueError(f"history has no {missing}; it has {sorted(logs)}.")
    fig = Figure(figsize=(3.2 * len(metrics), 2.6), dpi=80, layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, name in zip(axes, metrics):
        epochs = np.arange(1, len(logs[name]) + 1)
        ax.plot(epochs, logs[name], "o-", ms=3, label="train")
        if f"val_{name}" in logs:
            ax.plot(epochs, logs[f"val_{name}"], "s--", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{name} (nats)")
        ax.set_title(name)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def kl_per_dimension(kl: Mapping[str, Sequence[float]], threshold: float | None = 0.1,
                     title: str | None = None) -> Figure:
    """One bar panel per model: the KL of each latent dimension, largest first.

    Args:
        kl: model name -> KL(q(z_d|x) || p(z_d)) per latent dimension ``[D]`` in nats,
            averaged over images (e.g. ``objectives.per_dimension_kl(q, prior).numpy().mean(0)``).
        threshold: a dashed line at this KL (nats); a dimension below it counts as
            unused (collapsed). ``None`` draws no line.
    Panels share the y axis, so the models' rates compare at a glance.
    """
    if not kl:
        raise ValueError("kl is empty; expected {model name: KL per dimension [D]}.")
    values = {}
    for name, per_dim in kl.items():
        array = np.asarray(per_dim, dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"kl[{name!r}] has shape {array.shape}; expected [D] with D >= 1 "
                             "(one KL per latent dimension).")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"kl[{name!r}] has NaN or infinite values.")
        values[name] = np.sort(array)[::-1]
    fig = Figure(figsize=(min(3.4 * len(values), 12.0), 2.8), dpi=80, layout="constrained")
    axes = fig.subplots(1, len(values), sharey=True, squeeze=False)[0]
    for ax, (name, sorted_kl) in zip(axes, values.items()):
        ax.bar(np.arange(1, len(sorted_kl) + 1), sorted_kl)
        if threshold is not None:
            ax.axhline(threshold, color="C3", ls="--", lw=1, label=f"{threshold:g} nats")
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("latent dimension (sorted)")
    axes[0].set_ylabel("KL per dimension (nats)")
    if title:
        fig.suptitle(title)
    return fig
