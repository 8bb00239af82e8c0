"""The built-in offline quickstart behind ``autometa compare`` with no config.

Three comparisons, sized to finish within about 5 minutes on 2 CPU cores, using only data that
installs with the dependencies (scikit-learn's digits) or that is generated (sinusoids), and
Omniglot when ``omniglot.npz`` is found (``$AUTOMETA_DATA`` or ``~/.cache/autometa``):

1. initialization (sinusoids, Finn et al. 2017 figure 2): random vs pretrained vs MAML;
2. inner optimizer: MAML's fixed inner learning rate (tuned by the search API) vs Meta-SGD's
   learned per-parameter rates;
3. few-shot classification (the MAML paper's table): fine-tuning and nearest-neighbour
   baselines vs MAML and ProtoNet.
"""

from __future__ import annotations

from autometa.data import find_file
from autometa.errors import DataNotFoundError


def omniglot_available() -> bool:
    try:
        find_file("omniglot.npz")
        return True
    except DataNotFoundError:
        return False


def quickstart_config(use_omniglot: bool | None = None) -> dict:
    """The quickstart comparison config (Omniglot for part 3 when found, digits otherwise)."""
    if use_omniglot is None:
        use_omniglot = omniglot_available()

    def sine_base(shots: int) -> dict:
        """The experiment both sinusoid comparisons share: MLP 40-40, meta-batch 25, Adam."""
        return {"tasks": {"name": "sinusoid", "shots": shots, "queries": 10},
                "model": {"name": "mlp", "hidden": [40, 40]},
                "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": 25, "steps": 1500},
                "run": {"validate_every": 250, "val_tasks": 100, "test_tasks": 600, "eval_batch": 200,
                        "checkpoint_every": 0, "log_every": 50, "threads": 1}}

    sine = {
        "name": "sinusoid_init", "slot": "initialization",
        "description": "Sinusoid regression, 10 support points (Finn et al. 2017, section 5.1). Each "
                       "initialization is adapted on a task's support points with 10 SGD steps of lr 0.01 and "
                       "scored by the query MSE. Random: no meta-training. Pretrained: the network fit "
                       "to the pooled data of all training tasks (the paper's baseline). MAML: meta-learned.",
        "reference": "random",
        "base": sine_base(shots=10),
        "fillers": {
            "random": {"kind": "hand-crafted", "label": "random init",
                       "learner": {"name": "pretrained", "inner_lr": 0.01, "eval_inner_steps": 10},
                       "outer": {"steps": 0}},
            "pretrained": {"kind": "hand-crafted", "label": "pretrained",
                           "learner": {"name": "pretrained", "inner_lr": 0.01, "eval_inner_steps": 10}},
            "maml": {"kind": "learned", "label": "MAML init",
                     "learner": {"name": "maml", "inner_lr": 0.01, "inner_steps": 1, "eval_inner_steps": 10}},
        },
    }
    optimizer = {
        "name": "inner_optimizer", "slot": "optimizer",
        "description": "The inner-loop update rule on 5-shot sinusoids, one adaptation step: MAML's "
                       "hand-crafted SGD with one learning rate (tuned by the search API on validation tasks, "
                       "6 Optuna TPE trials) against Meta-SGD, which learns a learning rate per parameter "
                       "(Li et al. 2017).",
        "reference": "sgd_tuned",
        "base": {**sine_base(shots=5), "learner": {"name": "maml", "inner_steps": 1}},
        "fillers": {  # fillers of MAML's `optimizer` slot (learner.optimizer)
            "sgd_tuned": {"kind": "tuned", "label": "SGD, tuned lr", "filler": {"name": "sgd", "lr": 0.01},
                          "tune": {"trials": 6,
                                   "space": {"learner.optimizer.lr": {"float": [0.001, 0.5], "log": True}},
                                   "overrides": {"outer": {"steps": 300}, "run": {"validate_every": 300}}}},
            "metasgd": {"kind": "learned", "label": "Meta-SGD (learned rates)",
                        "filler": {"name": "learned_rates", "lr": 0.01}},
        },
    }
    if use_omniglot:
        tasks = {"name": "omniglot", "ways": 5, "shots": 1, "queries": 5}
        model = {"name": "conv4", "hidden": 32}
        steps, data_note = 250, "Omniglot (Vinyals split, 28x28, rotations as classes)"
    else:
        tasks = {"name": "digits", "ways": 5, "shots": 1, "queries": 5,
                 "classes": {"train": 5, "val": 0, "test": 5}}
        model = {"name": "conv4", "hidden": 32, "blocks": 3}
        steps, data_note = 300, "scikit-learn's 8x8 digits (classes 0-4 train, 5-9 test)"
    cls_run = {"validate_every": 0 if not use_omniglot else 50, "val_tasks": 50, "test_tasks": 600,
               "eval_batch": 50, "checkpoint_every": 0, "log_every": 25, "threads": 1}
    classification = {
        "name": "fewshot_classification", "slot": "initialization and embedding",
        "description": f"5-way 1-shot classification on {data_note}, the comparison of the MAML paper's "
                       "table: a network pretrained on the training classes and fine-tuned on the support set "
                       "(10 steps on a new head), nearest neighbour in pixel space, MAML (1 inner step, 3 at "
                       "test) and ProtoNet. A short budget: far from the published numbers, which need "
                       "hours of training.",
        "reference": "finetune",
        "base": {"tasks": tasks, "model": model,
                 "outer": {"optimizer": "adam", "lr": 0.001, "meta_batch": 8, "steps": steps},
                 "run": cls_run},
        "fillers": {
            "finetune": {"kind": "hand-crafted", "label": "pretrain + fine-tune",
                         "learner": {"name": "pretrained", "inner_lr": 0.1, "eval_inner_steps": 10}},
            "nearest": {"kind": "hand-crafted", "label": "nearest neighbour",
                        "learner": {"name": "nearest_neighbor"}},
            "maml": {"kind": "learned", "label": "MAML",
                     "learner": {"name": "maml", "inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3}},
            "protonet": {"kind": "learned", "label": "ProtoNet", "learner": {"name": "protonet"}},
        },
    }
    return {
        "description": "autometa quickstart: hand-crafted vs learned components on three slots, offline.",
        "seeds": [0, 1],
        "comparisons": [sine, optimizer, classification],
    }
