"""Second-order α-gradient: the paper's finite-difference HVP (radius r / ||v||) against exact double backward."""
import json
import sys

import torch

from autometa.experiment._architecture import _images
from autometa.slots.architecture import DARTS, alpha_gradient

torch.set_num_threads(1)
x, y = _images("fashion_mnist", True, 64, 0)
out = []
for dtype in (torch.float32, torch.float64):
    d = DARTS(primitives="reduced", init_channels=4, layers=5, seed=0).to(dtype)
    net = d.build_network((1, 28, 28), 10).to(dtype)
    params = dict(net.named_parameters())
    train, val = (x[:32].to(dtype), y[:32]), (x[32:].to(dtype), y[32:])
    exact, _ = alpha_gradient(d, net, params, train, val, 0.025, "second", "exact", 0.9, 3e-4)
    first, _ = alpha_gradient(d, net, params, train, val, 0.025, "first")
    e = torch.cat([exact[k].flatten() for k in exact]).double()
    f1 = torch.cat([first[k].flatten() for k in first]).double()
    row = {"dtype": str(dtype), "first_order_rel_err": ((f1 - e).norm() / e.norm()).item()}
    for r in (1e-2, 1e-3, 1e-4):
        fd, _ = alpha_gradient(d, net, params, train, val, 0.025, "second", "finite_difference", 0.9, 3e-4, r=r)
        f = torch.cat([fd[k].flatten() for k in fd]).double()
        row[f"fd_r{r}_rel_err"] = ((f - e).norm() / e.norm()).item()
        row[f"fd_r{r}_second_order_term_rel_err"] = ((f - e).norm() / (e - f1).norm()).item()
    print(json.dumps(row), flush=True)
    out.append(row)
json.dump(out, open(sys.argv[1], "w"), indent=1)
