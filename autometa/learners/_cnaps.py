"""CNAPs-style adaptation: a set encoder turns the support set into FiLM parameters for a
pre-trained backbone, and a Mahalanobis head classifies (Simple CNAPS).

Nothing is adapted by gradient inside a task: the task-specific network is generated,
theta* = g_omega(D_support). The meta-parameters ω are the set encoder and the FiLM generators;
the backbone is pre-trained by ordinary classification and frozen (as in CNAPs), unless
``freeze_backbone=False``.

The parts are small pure functions, each checked against a naive float64 reference in
``tests/learners/test_model_based.py``: :func:`regularized_class_covariances`,
:func:`mahalanobis_logits`, :func:`film_conv4_forward`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from autometa.errors import CheckpointError, ConfigError
from autometa.learners._base import check_positive
from autometa.learners._metric import MetricLearner, _submodule_params, squared_euclidean
from autometa.nets import BatchNorm2d, Conv4

HEADS = ("mahalanobis", "euclidean")


# ----------------------------------------------------------------------------- the head (pure functions)

def class_means(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """Mean feature of each class ``(ways, d)``."""
    member = F.one_hot(labels, ways).to(features.dtype)  # (n, ways)
    return member.T @ features / member.sum(0)[:, None]


def covariance(features: Tensor) -> Tensor:
    """Unbiased sample covariance ``(d, d)`` of the rows of ``features (n, d)``; zero when ``n = 1``."""
    n = features.shape[0]
    centred = features - features.mean(0, keepdim=True)
    return centred.T @ centred / max(n - 1, 1)


def regularized_class_covariances(features: Tensor, labels: Tensor, ways: int, beta: float = 1.0) -> Tensor:
    """Simple CNAPS's class covariances ``Q_k = l_k S_k + (1 - l_k) S_task + beta I``, ``(ways, d, d)``.

    ``S_k`` is the sample covariance of class ``k``'s support features (zero for one shot),
    ``S_task`` that of the whole support set, ``l_k = n_k / (n_k + 1)`` with ``n_k`` the class's
    shots, and ``beta I`` (``beta = 1``) keeps ``Q_k`` invertible.

    References: Bateni, Goyal, Masrani, Wood & Sigal 2020, "Improved Few-Shot Visual
    Classification" (Simple CNAPS), equation (6).
    """
    task = covariance(features)
    eye = torch.eye(features.shape[1], dtype=features.dtype, device=features.device)
    covs = []
    for k in range(ways):
        members = features[labels == k]
        weight = members.shape[0] / (members.shape[0] + 1.0)
        covs.append(weight * covariance(members) + (1 - weight) * task + beta * eye)
    return torch.stack(covs)


def mahalanobis_logits(queries: Tensor, means: Tensor, covariances: Tensor) -> Tensor:
    """``-(x - mu_k)^T Q_k^{-1} (x - mu_k)`` for each query and class, ``(queries, ways)``.

    The squared Mahalanobis distance of Simple CNAPS (no 1/2, no log-determinant), computed with
    a Cholesky solve rather than an explicit inverse.
    """
    diff = queries[None, :, :] - means[:, None, :]  # (ways, q, d)
    chol = torch.linalg.cholesky(covariances)  # (ways, d, d)
    solved = torch.cholesky_solve(diff.transpose(1, 2), chol)  # (ways, d, q) = Q^-1 diff^T
    return -(diff.transpose(1, 2) * solved).sum(1).T


# ----------------------------------------------------------------------------- FiLM'd Conv4

def film_conv4_forward(model: Conv4, params: dict[str, Tensor], x: Tensor, gammas: list[Tensor] | None,
                       betas: list[Tensor] | None) -> Tensor:
    """Conv4's embedding with ``x * gamma_b + beta_b`` after the batch norm of every block ``b``.

    ``gammas`` / ``betas`` hold one ``(channels,)`` tensor per block; None runs the plain network.
    ``params`` are the network's parameters (names as in ``model.named_parameters()``).

    References: Perez et al. 2018 (FiLM); Requeima et al. 2019 (CNAPs), where FiLM layers follow
    the batch norm of each block of the feature extractor.
    """
    blocks = [m for m in model.features if isinstance(m, nn.Sequential)]
    for b, block in enumerate(blocks):
        conv, norm = block[0], block[1]
        x = F.conv2d(x, params[f"features.{b}.0.weight"], params[f"features.{b}.0.bias"], padding=conv.padding)
        x = F.batch_norm(x, None, None, params[f"features.{b}.1.weight"], params[f"features.{b}.1.bias"],
                         training=True, eps=norm.eps)
        if gammas is not None:
            x = x * gammas[b].view(1, -1, 1, 1) + betas[b].view(1, -1, 1, 1)
        x = F.relu(x)
        if len(block) > 3:
            x = F.max_pool2d(x, 2)
    return x.flatten(1)


def _check_conv4(model: nn.Module) -> list[int]:
    """The channels of each block of a Conv4 built by autometa (with batch norm with batch statistics)."""
    blocks = [m for m in getattr(model, "features", []) if isinstance(m, nn.Sequential)]
    if not isinstance(model, Conv4) or not blocks or not all(isinstance(b[1], BatchNorm2d) for b in blocks):
        raise ConfigError(f"SimpleCNAPS puts FiLM layers into the blocks of autometa's Conv4 (model: {{name: conv4}}). "
                          f"Got {type(model).__name__}; use conv4, or film=False for any embedding network.")
    return [b[0].out_channels for b in blocks]


def _read_weights(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"The `backbone` checkpoint {str(path)!r} does not exist. Pre-train one with "
                              f"`autometa run experiments/pretrain_conv4_omniglot_background.yaml --out runs/pretrain` "
                              f"and pass runs/pretrain/checkpoints/last.pt.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors come in many types
        raise CheckpointError(f"The `backbone` checkpoint {str(path)!r} could not be read ({type(exc).__name__}: "
                              f"{exc}); pass a checkpoint written by `autometa run` or torch.save(state_dict)."
                              ) from exc
    if isinstance(state, dict) and isinstance(state.get("learner"), dict):
        state = state["learner"]
    if not isinstance(state, dict):
        raise CheckpointError(f"The `backbone` checkpoint {str(path)!r} holds a {type(state).__name__}, not a state "
                              f"dict; pass a checkpoint written by `autometa run` or torch.save(state_dict).")
    return state


def backbone_weights(model: nn.Module, path: str | Path) -> dict[str, Tensor]:
    """The ``features.*`` weights for ``model`` in the checkpoint at ``path`` (see :class:`SimpleCNAPS`).

    Raises:
        CheckpointError: a missing or unreadable file, or one without weights of the right shapes.
    """
    state = _read_weights(Path(path))
    wanted = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    found = {}
    for key in wanted:
        for stored in (f"model.{key}", key):
            if stored in state:
                found[key] = state[stored]
                break
    bad = [k for k in wanted if k not in found or found[k].shape != wanted[k].shape]
    if bad:
        raise CheckpointError(f"The `backbone` checkpoint {str(path)} has no weights of the right shape for "
                              f"{len(bad)} of the network's {len(wanted)} feature tensors (first: {bad[0]!r}, shape "
                              f"{tuple(wanted[bad[0]].shape)}). Pre-train the same network (model section) it is "
                              f"loaded into.")
    return found


# ----------------------------------------------------------------------------- the learner

class SimpleCNAPS(MetricLearner):
    """Simple CNAPS on a Conv4: FiLM generated from the support set, Mahalanobis head.

    A set encoder (a small Conv4, mean-pooled over the support images) gives a task
    representation ``z``; for each block ``b`` of the backbone an MLP maps ``z`` to
    ``gamma_b = 1 + delta_b`` and ``beta_b`` (zero-initialised output layers: an untrained
    learner is the plain backbone). Support and query images go through the FiLM'd backbone
    together; a query's logits are minus its squared Mahalanobis distances to the class means
    under :func:`regularized_class_covariances`.

    Ablations: ``film=False`` (the backbone as pre-trained; nothing to learn while the backbone
    is frozen), ``head="euclidean"`` (minus the squared Euclidean distance to the class means,
    the ProtoNet head). ``film=False, head="euclidean", freeze_backbone=False`` is ProtoNet on
    this backbone, fine-tuned episodically.

    Args:
        model: the backbone, a Conv4 without head.
        backbone: a checkpoint to load the backbone's ``features.*`` from: an ``autometa run``
            checkpoint (``checkpoints/last.pt`` of a ``pretrained`` run, whose learner holds the
            network as ``model``) or a state dict. None keeps the network as built.
        film: generate FiLM layers from the support set.
        head: ``"mahalanobis"`` or ``"euclidean"``.
        freeze_backbone: keep the backbone's weights fixed (they get no meta-gradient).
        encoder_hidden: filters of the set encoder (its blocks follow the backbone's).
        film_hidden: hidden units of each block's FiLM generator.
        beta: weight of the identity in the class covariances (1 in the paper).

    References: Requeima, Gordon, Bronskill, Nowozin & Turner 2019, "Fast and Flexible Multi-Task
    Classification Using Conditional Neural Adaptive Processes"; Bateni et al. 2020, "Improved
    Few-Shot Visual Classification" (Simple CNAPS).
    """

    SPACE: ClassVar[dict] = {"film_hidden": {"int": [16, 256], "log": True},
                             "beta": {"float": [0.01, 10.0], "log": True}}

    def __init__(self, model: nn.Module, backbone: str | None = None, film: bool = True, head: str = "mahalanobis",
                 freeze_backbone: bool = True, encoder_hidden: int = 32, film_hidden: int = 64, beta: float = 1.0,
                 task: str = "classification", batching: str = "loop"):
        super().__init__(model, task, batching)
        if head not in HEADS:
            raise ConfigError(f"The `head` of SimpleCNAPS must be one of {HEADS}. Got {head!r} instead.")
        for key, value in (("film", film), ("freeze_backbone", freeze_backbone)):
            if not isinstance(value, bool):
                raise ConfigError(f"The `{key}` of SimpleCNAPS must be true or false. Got {value!r} instead.")
        check_positive("SimpleCNAPS", "encoder_hidden", encoder_hidden, int)
        check_positive("SimpleCNAPS", "film_hidden", film_hidden, int)
        check_positive("SimpleCNAPS", "beta", beta)
        if batching == "vmap":
            raise ConfigError("SimpleCNAPS reads the number of ways from the support labels, which vmap cannot; "
                              "use batching='loop' or 'threads'.")
        self.film, self.head, self.beta, self.backbone = film, head, float(beta), backbone
        self.freeze_backbone = freeze_backbone
        if backbone is not None:
            if not isinstance(backbone, (str, Path)):
                raise ConfigError(f"The `backbone` of SimpleCNAPS must be the path of a checkpoint or null. Got "
                                  f"{backbone!r} instead.")
            weights = backbone_weights(model, backbone)
            with torch.no_grad():
                for name, value in model.state_dict().items():
                    if name in weights:
                        value.copy_(weights[name])
        if freeze_backbone:
            model.requires_grad_(False)
        if film:
            channels = _check_conv4(model)
            self.set_encoder = Conv4(model.features[0][0].in_channels, None, hidden=encoder_hidden,
                                     blocks=len(channels))
            z = encoder_hidden * self._side(model) ** 2
            self.film_generators = nn.ModuleList(
                nn.Sequential(nn.Linear(z, film_hidden), nn.ReLU(), nn.Linear(film_hidden, 2 * c)) for c in channels)
            for generator in self.film_generators:
                nn.init.zeros_(generator[-1].weight)
                nn.init.zeros_(generator[-1].bias)

    @staticmethod
    def _side(model: Conv4) -> int:
        channels = [m for m in model.features if isinstance(m, nn.Sequential)][-1][0].out_channels
        return round((model.feature_dim // channels) ** 0.5)

    def _mode(self, batch):
        mode = super()._mode(batch)
        return "loop" if mode == "vmap" else mode

    def film_parameters(self, meta: dict[str, Tensor], support_x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """``(gammas, betas)`` per backbone block, generated from the support images."""
        z = self.call(meta, "set_encoder", support_x).flatten(1).mean(0)
        gammas, betas = [], []
        for b in range(len(self.film_generators)):
            out = functional_call(self.film_generators[b], _submodule_params(meta, f"film_generators.{b}"), (z,))
            delta, beta = out.chunk(2)
            gammas.append(1 + delta)
            betas.append(beta)
        return gammas, betas

    def scores(self, meta, support_x, support_y, query_x):
        ways = int(support_y.max()) + 1  # labels checked by meta_backward / evaluate (MetricLearner)
        params = self.model_params(meta)
        both = torch.cat([support_x, query_x])
        if self.film:
            gammas, betas = self.film_parameters(meta, support_x)
            features = film_conv4_forward(self.model, params, both, gammas, betas)
        else:
            features = self.embed(meta, both)[0]
        support, queries = features[:len(support_x)], features[len(support_x):]
        means = class_means(support, support_y, ways)
        if self.head == "euclidean":
            logits = -squared_euclidean(queries, means)
        else:
            logits = mahalanobis_logits(queries, means,
                                        regularized_class_covariances(support, support_y, ways, self.beta))
        return logits, torch.ones(ways, dtype=torch.bool, device=logits.device)
