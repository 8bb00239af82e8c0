"""Save, load and look at a support set: ``.npz`` files usable as a dataset, and a PNG grid per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import Tensor

from autometa.errors import ConfigError


def save_support(path: str | os.PathLike, x: Tensor, y: Tensor, mean: float = 0.0, std: float = 1.0,
                 class_names=None, **info) -> Path:
    """Write a support set as ``x_train`` (float32, un-normalised: ``x * std + mean``) and ``y_train`` to an
    ``.npz`` file that :func:`autometa.data.load_dataset` reads by path (``load_dataset("set.npz")``).

    ``info`` (e.g. ``method="dc"``, ``source="mnist"``, ``ipc=1``) is stored as ``info_<key>`` arrays.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"A support set is saved as .npz; got the path {str(path)!r}. Use a name ending in .npz.")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": (x.detach().cpu().double() * std + mean).float().numpy(),
              "y_train": y.detach().cpu().numpy().astype(np.int64)}
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(c) for c in class_names])
    arrays.update({f"info_{k}": np.asarray(v) for k, v in info.items()})
    np.savez_compressed(path, **arrays)
    return path


def save_grid(path: str | os.PathLike, x: Tensor, y: Tensor, mean: float = 0.0, std: float = 1.0,
              class_names=None, title: str | None = None) -> Path | None:
    """A PNG grid of the images, one column per class (rows: the class's images); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    images = (x.detach().cpu().double() * std + mean).clamp(0, 1).numpy()
    labels = y.detach().cpu().numpy()
    classes = sorted(set(labels.tolist()))
    rows = max(int((labels == c).sum()) for c in classes)
    shown = min(rows, 10)
    fig, axes = plt.subplots(shown, len(classes), figsize=(1.0 * len(classes), 1.0 * shown + 0.4), squeeze=False)
    for j, c in enumerate(classes):
        members = np.flatnonzero(labels == c)
        for i in range(shown):
            ax = axes[i][j]
            ax.axis("off")
            if i < len(members):
                image = images[members[i]]
                ax.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        axes[0][j].set_title(str(class_names[c]) if class_names is not None else str(c), fontsize=7)
    if title:
        fig.suptitle(title + (f" (first {shown} of {rows} per class)" if shown < rows else ""), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
