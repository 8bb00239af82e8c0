"""Datasets: offline ``.npz`` files, verified conversion of the official files, user arrays.

Files are looked for in this order: an explicit ``root`` argument, ``$AUTOMETA_DATA``, then
``~/.cache/autometa``.
"""

from autometa.data._acquire import (
    FASHION_MNIST_FILES,
    MNIST_FILES,
    OMNIGLOT_FILES,
    RemoteFile,
    add_data_parser,
    convert_idx_files,
    convert_omniglot_zips,
    download,
    file_digests,
    main_data,
    prepare_dataset,
    read_idx,
    run_data,
)
from autometa.data._datasets import (
    LOADERS,
    ArrayDataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_npz_dataset,
    load_omniglot,
)
from autometa.data._paths import cache_dir, candidate_dirs, find_file

__all__ = [
    "FASHION_MNIST_FILES",
    "LOADERS",
    "MNIST_FILES",
    "OMNIGLOT_FILES",
    "ArrayDataset",
    "RemoteFile",
    "add_data_parser",
    "cache_dir",
    "candidate_dirs",
    "convert_idx_files",
    "convert_omniglot_zips",
    "download",
    "file_digests",
    "find_file",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_npz_dataset",
    "load_omniglot",
    "main_data",
    "prepare_dataset",
    "read_idx",
    "run_data",
]
