"""CPU seconds and peak memory per DARTS search step (α step + w step) on Fashion-MNIST, one config per process."""
import json
import resource
import sys

import torch

from autometa.experiment._architecture import _images
from autometa.slots.architecture import DARTS, search

torch.set_num_threads(1)
primitives, order, hessian = sys.argv[1], sys.argv[5], sys.argv[6]
channels, layers, batch = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x, y = _images("fashion_mnist", True, 4 * batch, 0)
d = DARTS(primitives=primitives, init_channels=channels, layers=layers, batch_size=batch, order=order,
          hessian=hessian, epochs=1)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = search(d, x, y, steps_per_epoch=2, eigenvalue_batches=0)
print(json.dumps({"primitives": primitives, "init_channels": channels, "layers": layers, "batch": batch, "order": order,
                  "hessian": hessian, "cpu_s_per_step_incl_epoch_eval": r.cpu_s / r.steps,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
