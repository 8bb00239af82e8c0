"""Second-order α-gradient: FD-HVP vs exact on random-normal vs Fashion-MNIST inputs (float64, no max-pool)."""
import json

import torch

from autometa.experiment._architecture import _images
from autometa.slots.architecture import DARTS, alpha_gradient

torch.set_num_threads(1)
xf, yf = _images("fashion_mnist", True, 16, 0)
g = torch.Generator().manual_seed(0)
for name, x, y, layers in (("randn28", torch.randn(16, 1, 28, 28, generator=g), yf, 3), ("fashion28", xf, yf, 3),
                           ("fashion28_l1", xf, yf, 1)):
    no_max_pool = ["none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]
    d = DARTS(primitives=no_max_pool, init_channels=2, layers=layers, seed=0).double()
    net = d.build_network((1, 28, 28), 10).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    train, val = (x[:8].double(), y[:8]), (x[8:].double(), y[8:])
    exact, _ = alpha_gradient(d, net, params, train, val, 0.025, "second", "exact", 0.9, 3e-4)
    first, _ = alpha_gradient(d, net, params, train, val, 0.025, "first")
    e = torch.cat([exact[k].flatten() for k in exact])
    f1 = torch.cat([first[k].flatten() for k in first])
    row = {"case": name, "share": ((e - f1).norm() / e.norm()).item()}
    for r in (1e-2, 1e-4, 1e-6):
        fd, _ = alpha_gradient(d, net, params, train, val, 0.025, "second", "finite_difference", 0.9, 3e-4, r=r)
        f = torch.cat([fd[k].flatten() for k in fd])
        row[f"r{r}"] = ((f - e).norm() / (e - f1).norm()).item()
    print(json.dumps(row), flush=True)
