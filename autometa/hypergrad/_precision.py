"""The arithmetic precision of meta-gradients: exact float32, TF32 or bfloat16 autocast.

On NVIDIA GPUs since Ampere, torch runs cuDNN convolutions in TF32 by default
(``torch.backends.cudnn.allow_tf32 = True``; matrix products stay float32 unless
``torch.backends.cuda.matmul.allow_tf32`` is set). TF32 keeps 10 bits of mantissa, so each
convolution is accurate to about 1e-3 relative, and a second-order meta-gradient (a convolution's
double backward, through several inner steps) compounds that: on an H200, loops of different
libraries gave meta-gradients 2e-4 to 4e-3 apart (relative max-abs) with TF32 at torch's
defaults (issue 15). Meta-gradients are compared against float64, tested against finite
differences and used to learn an initialization, so autometa's policy is:

- ``"fp32"`` (the default of ``autometa run``): TF32 off for cuDNN and matrix products, float32
  matmul precision ``"highest"``: the exact float32 path, whose error against float64 is
  float32 rounding (about 1e-5 relative on Conv4 MAML on a CPU, vmap and loop alike).
- ``"tf32"``: TF32 on for both: faster on tensor-core GPUs, errors of order 1e-3.
- ``"bf16"``: TF32 on and ``torch.autocast`` to bfloat16 (8 bits of mantissa): the fastest
  and least exact; for throughput studies, not for gradient checks.
- ``"torch"``: leave torch's global settings as they are.

:func:`precision` applies one of them for the length of a ``with`` block and restores torch's
settings after it. On a CPU TF32 does not exist (the flags change nothing); bf16 autocast does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from autometa.errors import ConfigError

PRECISIONS = ("fp32", "tf32", "bf16", "torch")


def check_precision(value, owner: str = "run.precision") -> str:
    """``value`` if it names a precision policy, else a :class:`ConfigError` naming the choices."""
    if value not in PRECISIONS:
        raise ConfigError(f"{owner} must be one of {PRECISIONS} (fp32: exact float32, TF32 off; tf32: TF32 on; "
                          f"bf16: bfloat16 autocast; torch: torch's own settings). Got {value!r}.")
    return value


def precision_state() -> dict:
    """torch's current precision switches, as recorded next to every GPU measurement."""
    return {"cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


@contextlib.contextmanager
def precision(policy: str, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block under a precision policy (see the module docstring); torch's settings are
    restored when it ends.

    Example::

        with precision("fp32", "cuda"):
            learner.meta_backward(batch)   # no TF32 anywhere: comparable with float64

    Raises:
        ConfigError: an unknown policy.
    """
    check_precision(policy, "precision")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    try:
        if policy != "torch":
            tf32 = policy != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            torch.set_float32_matmul_precision("high" if tf32 else "highest")
        if policy == "bf16":
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
