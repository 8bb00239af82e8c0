"""Cross-check of the shared evaluator against the reference's ``evaluate_synset`` on the same saved set.

Trains fresh reference ConvNets (``utils.get_network``) with the reference's ``evaluate_synset`` on a set
saved by the study (``sets/*.npz``), under (a) no augmentation, 300 epochs (what the reference does for
Fashion-MNIST) and (b) its MNIST protocol: crop/scale/rotate augmentation (``get_daparam``) and 1000
epochs; tests on the same fixed 1000 test images as the study. The reference is imported from
``--reference PATH`` as in ``benchmarks/dc_reference_speed.py`` (torchvision stubbed; scipy's real
``ndimage.rotate`` serves the reference's rotation).

Usage::

    python benchmarks/distillation_reference_eval.py --reference DIR \
        --set benchmarks/distillation/mnist_ipc1_budget/sets/mnist_ipc1_random_real_set0.npz
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True)
    parser.add_argument("--set", required=True)
    parser.add_argument("--nets", type=int, default=2)
    parser.add_argument("--modes", default="plain300,mnist_aug1000")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import numpy as np
    import scipy.ndimage
    import torch

    from autometa.compare._distillation import _test_subset, load_data

    for name in ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.utils"):
        sys.modules.setdefault(name, types.ModuleType(name)).__dict__.update(datasets=None, transforms=None,
                                                                               save_image=None)
    interp = types.ModuleType("scipy.ndimage.interpolation")
    interp.rotate = scipy.ndimage.rotate
    sys.modules["scipy.ndimage.interpolation"] = interp
    sys.path.insert(0, args.reference)
    import utils as ref

    torch.set_num_threads(1)
    saved = np.load(args.set)
    dataset = str(saved["info_source"])
    data = load_data({"train_size": None}, dataset)
    x = (torch.from_numpy(saved["x_train"]) - data["mean"]) / data["std"]
    y = torch.from_numpy(saved["y_train"]).long()
    x_test, y_test = _test_subset(data, 1000)
    testloader = torch.utils.data.DataLoader(ref.TensorDataset(x_test, y_test), batch_size=256, shuffle=False)
    results = {}
    for mode in args.modes.split(","):
        ns = types.SimpleNamespace(device="cpu", lr_net=0.01, batch_train=256, dsa=False, dsa_param=None,
                                   epoch_eval_train=300 if mode == "plain300" else 1000,
                                   dc_aug_param=None if mode == "plain300" else ref.get_daparam("MNIST", "ConvNet",
                                                                                                "ConvNet", 1))
        accs, start = [], time.process_time()
        for k in range(args.nets):
            net = ref.get_network("ConvNet", 1, 10, (28, 28))
            _, _, acc = ref.evaluate_synset(k, net, x.clone(), y.clone(), testloader, ns)
            accs.append(acc)
        results[mode] = {"accuracies": accs, "mean": float(np.mean(accs)), "cpu_s": time.process_time() - start}
        print(mode, results[mode], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"set": args.set, "results": results}, indent=2))


if __name__ == "__main__":
    main()
