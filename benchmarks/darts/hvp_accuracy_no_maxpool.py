"""Same as fd_error.py in float64, with and without max-pooling among the operations (ties in flat image regions)."""
import json
import sys

import torch

from autometa.experiment._architecture import _images
from autometa.slots.architecture import DARTS, alpha_gradient

torch.set_num_threads(1)
x, y = _images("fashion_mnist", True, 64, 0)
out = []
for primitives in (["none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"], "reduced"):
    d = DARTS(primitives=primitives, init_channels=4, layers=5, seed=0).double()
    net = d.build_network((1, 28, 28), 10).double()
    params = dict(net.named_parameters())
    train, val = (x[:32].double(), y[:32]), (x[32:].double(), y[32:])
    exact, _ = alpha_gradient(d, net, params, train, val, 0.025, "second", "exact", 0.9, 3e-4)
    first, _ = alpha_gradient(d, net, params, train, val, 0.025, "first")
    e = torch.cat([exact[k].flatten() for k in exact])
    f1 = torch.cat([first[k].flatten() for k in first])
    row = {"primitives": primitives, "second_order_term_share": ((e - f1).norm() / e.norm()).item()}
    for r in (1e-2, 1e-4, 1e-6):
        fd, _ = alpha_gradient(d, net, params, train, val, 0.025, "second", "finite_difference", 0.9, 3e-4, r=r)
        f = torch.cat([fd[k].flatten() for k in fd])
        row[f"r{r}"] = ((f - e).norm() / (e - f1).norm()).item()
    print(json.dumps(row), flush=True)
    out.append(row)
json.dump(out, open(sys.argv[1], "w"), indent=1)
