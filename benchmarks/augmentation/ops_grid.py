"""Every operation of the augmentation slot at several magnitudes, on real images (PNG grids).

Run: ``AUTOMETA_DATA=... python benchmarks/augmentation/ops_grid.py`` (a few seconds); writes
``ops_fashion_mnist.png`` and ``ops_omniglot.png`` next to this file. Rows are operations, columns
magnitudes (signed operations also at -1); cutout's square is placed by a seeded generator.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from autometa.data import load_dataset
from autometa.slots.augmentation import DADA_OPS, OPS, SIGNED

MAGNITUDES = (-1.0, 0.0, 0.25, 0.5, 0.75, 1.0)
HERE = Path(__file__).parent


def grid(image: torch.Tensor, title: str, path: Path) -> None:
    ops = DADA_OPS
    fig, axes = plt.subplots(len(ops), len(MAGNITUDES), figsize=(1.3 * len(MAGNITUDES), 1.3 * len(ops)))
    for row, name in zip(axes, ops):
        for ax, m in zip(row, MAGNITUDES):
            ax.set_xticks([])
            ax.set_yticks([])
            if m < 0 and name not in SIGNED:
                ax.axis("off")
                continue
            out = OPS[name](image[None], torch.tensor([m]), torch.Generator().manual_seed(0))[0, 0]
            ax.imshow(out.numpy(), cmap="gray", vmin=0, vmax=1)
            if name == ops[0] or (m < 0 and name == "shear_x"):
                ax.set_title(f"m = {m:g}", fontsize=8)
        row[0].set_ylabel(name, fontsize=8)
        if name not in SIGNED:
            row[1].set_ylabel(name, fontsize=8)
    fig.suptitle(title + " (colour is the identity on grey images)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print("wrote", path)


if __name__ == "__main__":
    fashion = load_dataset("fashion_mnist", train=False)
    grid(torch.from_numpy(fashion.x[0]), "Fashion-MNIST test image 0", HERE / "ops_fashion_mnist.png")
    omniglot = load_dataset("omniglot")
    grid(torch.from_numpy(omniglot.x[0]).float(), "Omniglot image 0 (ink high)", HERE / "ops_omniglot.png")
