"""One DC outer iteration: autometa's DC against the reference implementation, side by side (issue 12).

The reference (github.com/VICO-UoE/DatasetCondensation, fetched for this measurement, never vendored)
is imported from ``--reference PATH``: its ``networks.ConvNet`` and ``utils.get_network`` /
``utils.match_loss`` / ``utils.DiffAugment``. Its outer iteration is the body of ``main.py``'s
``for it in range(args.Iteration+1)`` loop (the "Train synthetic data" part, lines 150-215 at commit
53f63a6), transcribed below line by line because ``main.py`` is a script, not a function. ``utils.py``
imports torchvision and scipy.ndimage.interpolation at module level for code this measurement never
calls (dataset download, the DC evaluation augmentation); both are replaced by empty stub modules.

Same CPU, same process, same torch and thread count, same data (MNIST, normalised as the reference
does), same configuration (ConvNet-3 width 128 instance norm avg pooling, ipc as given, published
outer/inner loops, 256 real images per class, lr_img 0.1, lr_net 0.01); the two implementations
alternate ``--reps`` times; medians of CPU and wall seconds per outer iteration are reported.

It first checks that the two compute the same thing: with the same network weights and the same
real batch, autometa's ``gradient_match_distance`` equals the reference's ``match_loss`` and the
gradients on the synthetic image agree.

Usage::

    python benchmarks/dc_reference_speed.py --reference /path/to/DatasetCondensation [--ipc 1] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path


def import_reference(path: str):
    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.utils",
                 "scipy.ndimage.interpolation"):
        stub = types.ModuleType(name)
        stub.__dict__.update(datasets=None, transforms=None, save_image=None, rotate=None)
        sys.modules.setdefault(name, stub)
    sys.path.insert(0, str(path))
    import utils as ref_utils

    return ref_utils


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, help="folder of the DatasetCondensation checkout")
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/distillation/dc_reference_speed.json")
    args = parser.parse_args()

    import numpy as np
    import torch
    import torch.nn as nn

    from autometa.data import load_dataset
    from autometa.slots.data import DC, build_convnet, gradient_match_distance

    torch.set_num_threads(args.threads)
    ref = import_reference(args.reference)
    train = load_dataset("mnist")
    mean, std = 0.1307, 0.3081
    images_all = (torch.from_numpy(train.x) - mean) / std
    num_classes, channel, im_size = 10, 1, (28, 28)
    indices_class = [np.flatnonzero(train.y == c).tolist() for c in range(num_classes)]

    def get_images(c, n):  # main.py's get_images
        idx_shuffle = np.random.permutation(indices_class[c])[:n]
        return images_all[idx_shuffle]

    ref_args = types.SimpleNamespace(dis_metric="ours", device="cpu", dsa=False, batch_train=256,
                                     dc_aug_param=None, lr_net=0.01)
    outer_loop, inner_loop = ref.get_loops(args.ipc)

    # ---- 0. equivalence: same weights, same real batch -> same distance and same image gradient ----
    net_ref = ref.get_network("ConvNet", channel, num_classes, im_size)
    ours = build_convnet((1, 28, 28), num_classes)
    ours.load_state_dict(net_ref.state_dict())
    img_real, img_syn0 = get_images(3, args.batch_real), get_images(3, args.ipc)
    lab = torch.full((args.batch_real,), 3)
    dists, grads = [], []
    for net, distance in ((net_ref, lambda a, b: ref.match_loss(a, b, ref_args)), (ours, gradient_match_distance)):
        params = list(net.parameters())
        img_syn = img_syn0.clone().requires_grad_(True)
        gw_real = [g.detach() for g in torch.autograd.grad(nn.functional.cross_entropy(net(img_real), lab), params)]
        gw_syn = torch.autograd.grad(nn.functional.cross_entropy(net(img_syn), lab[:args.ipc]), params,
                                     create_graph=True)
        d = distance(gw_syn, gw_real)
        dists.append(d.item())
        grads.append(torch.autograd.grad(d, img_syn)[0])
    equivalence = {"distance_reference": dists[0], "distance_autometa": dists[1],
                   "image_grad_max_abs_diff": (grads[0] - grads[1]).abs().max().item(),
                   "image_grad_max_abs": grads[0].abs().max().item()}
    print("equivalence:", equivalence)

    # ---- 1. the reference's outer iteration (main.py, "Train synthetic data") ----
    image_syn = torch.randn(size=(num_classes * args.ipc, channel, *im_size), dtype=torch.float, requires_grad=True)
    label_syn = torch.arange(num_classes).repeat_interleave(args.ipc)
    for c in range(num_classes):
        image_syn.data[c * args.ipc:(c + 1) * args.ipc] = get_images(c, args.ipc).detach().data
    optimizer_img = torch.optim.SGD([image_syn], lr=0.1, momentum=0.5)
    criterion = nn.CrossEntropyLoss()

    def reference_iteration():
        net = ref.get_network("ConvNet", channel, num_classes, im_size)
        net.train()
        net_parameters = list(net.parameters())
        optimizer_net = torch.optim.SGD(net.parameters(), lr=ref_args.lr_net)
        optimizer_net.zero_grad()
        for ol in range(outer_loop):
            loss = torch.tensor(0.0)
            for c in range(num_classes):
                img_real = get_images(c, args.batch_real)
                lab_real = torch.ones((img_real.shape[0],), dtype=torch.long) * c
                img_syn = image_syn[c * args.ipc:(c + 1) * args.ipc].reshape((args.ipc, channel, *im_size))
                lab_syn = torch.ones((args.ipc,), dtype=torch.long) * c
                output_real = net(img_real)
                loss_real = criterion(output_real, lab_real)
                gw_real = torch.autograd.grad(loss_real, net_parameters)
                gw_real = list(_.detach().clone() for _ in gw_real)
                output_syn = net(img_syn)
                loss_syn = criterion(output_syn, lab_syn)
                gw_syn = torch.autograd.grad(loss_syn, net_parameters, create_graph=True)
                loss += ref.match_loss(gw_syn, gw_real, ref_args)
            optimizer_img.zero_grad()
            loss.backward()
            optimizer_img.step()
            if ol == outer_loop - 1:
                break
            dst = ref.TensorDataset(image_syn.detach().clone(), label_syn.clone())
            loader = torch.utils.data.DataLoader(dst, batch_size=ref_args.batch_train, shuffle=True, num_workers=0)
            for _ in range(inner_loop):
                ref.epoch("train", loader, net, optimizer_net, criterion, ref_args, aug=False)

    # ---- 2. autometa's outer iteration (DC.outer_iteration) on the same data ----
    filler = DC(ipc=args.ipc, iterations=1, batch_real=args.batch_real, seed=0)
    g = torch.Generator().manual_seed(0)
    filler._set(image_syn.detach().clone(), label_syn)
    by_class = [torch.as_tensor(ix) for ix in indices_class]
    optimizer = torch.optim.SGD([filler.images], lr=0.1, momentum=0.5)
    counter = iter(range(1, 10 ** 6))

    def autometa_iteration():
        filler.outer_iteration(images_all, by_class, num_classes, optimizer, next(counter), g)

    timings = {"reference": [], "autometa": []}
    for rep in range(args.reps):
        for name, fn in (("reference", reference_iteration), ("autometa", autometa_iteration)):
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            timings[name].append({"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall})
            last = timings[name][-1]
            print(f"rep {rep} {name:>9}: {last['cpu_s']:.2f} CPU s, {last['wall_s']:.2f} s wall", flush=True)
    summary = {name: {k: statistics.median(t[k] for t in ts) for k in ("cpu_s", "wall_s")}
               for name, ts in timings.items()}
    ratio = {k: summary["autometa"][k] / summary["reference"][k] for k in ("cpu_s", "wall_s")}
    print(f"median per outer iteration: reference {summary['reference']['cpu_s']:.2f} CPU s, autometa "
          f"{summary['autometa']['cpu_s']:.2f} CPU s; autometa / reference = {ratio['cpu_s']:.3f} (CPU), "
          f"{ratio['wall_s']:.3f} (wall)")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    result = {"config": {"ipc": args.ipc, "outer_loop": outer_loop, "inner_loop": inner_loop,
                         "batch_real": args.batch_real, "threads": args.threads, "dataset": "mnist",
                         "net": "ConvNet-3 width 128 instance norm avg pooling"},
              "torch": torch.__version__, "loadavg_at_end": load, "equivalence": equivalence,
              "timings": timings, "median": summary, "autometa_over_reference": ratio}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
