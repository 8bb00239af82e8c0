"""Datasets: offline ``.npz`` files, verified conversion of the official files, user arrays.

Files are looked for in this order: an explicit ``root`` argument, ``$AUTOMETA_DATA``, then
``~/.cache/autometa``.
"""

from autometa.data._datasets import (
    LOADERS,
    ArrayDataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_omniglot,
)
from autometa.data._paths import cache_dir, candidate_dirs, find_file

__all__ = [
    "ArrayDataset", "LOADERS", "load_dataset", "load_digits", "load_fashion_mnist", "load_mnist",
    "load_omniglot", "cache_dir", "candidate_dirs", "find_file",
]
