import os
from pathlib import Path

import pytest
import torch

DATA = os.environ.get("AUTOMETA_DATA")


@pytest.fixture(autouse=True)
def _one_thread():
    # tests are small; one thread avoids oversubscription when CI runs them on 2 cores
    torch.set_num_threads(1)


def needs_data(filename: str = "omniglot.npz"):
    """Skip (with the reason) when the offline data folder is not configured."""
    present = DATA is not None and (Path(DATA) / filename).is_file()
    return pytest.mark.skipif(not present, reason=f"set AUTOMETA_DATA to the folder holding {filename} (CI does)")
