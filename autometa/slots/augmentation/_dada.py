"""DADA's differentiable augmentation policy: the learned filler of the augmentation slot.

ω is a policy over ``K`` sub-policies, each an ordered pair of distinct operations:

- ``policy_logits (K,)``: the categorical distribution over sub-policies (softmax);
- ``probability_logits (K, 2)``: each operation's application probability (sigmoid);
- ``magnitude_logits (K, 2)``: each operation's magnitude in [0, 1] (sigmoid); signed operations
  draw a random sign, as AutoAugment does (DADA's code maps [0, 1] onto [-range, range]
  instead; with the sign drawn, magnitude 0 is the identity and the learned value is a strength).

Each image draws its own sub-policy and Bernoulli applications. Relaxations (DADA, Li et al. 2020):

- the sub-policy choice is Gumbel-softmax with a straight-through hard sample ``w``: the image
  becomes ``w_k aug_k(x) + sum_{j != k} w_j x``, whose value is ``aug_k(x)`` and whose gradient
  reaches every logit (the unchosen sub-policies are represented by the unaugmented image);
  :func:`relax_surrogate` replaces that path with the RELAX estimator during a search;
- each application is a relaxed Bernoulli (binary Concrete) with a straight-through hard sample
  ``b``: ``b op(x) + (1 - b) x``;
- magnitudes get the exact gradient of the operation where it has one, else DADA's
  straight-through gradient (``exact_magnitude_gradient=False``: straight-through for all).

References: Li, Hu, Wang, Hospedales, Robertson & Yang 2020, "DADA: Differentiable Automatic Data
Augmentation"; Jang et al. 2017 and Maddison et al. 2017 (Gumbel-softmax / Concrete); Grathwohl
et al. 2018 (RELAX).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from autometa.errors import ConfigError
from autometa.slots.augmentation._ops import EXACT_MAGNITUDE, GREY_OPS, OPS, SIGNED, straight_through_magnitude
from autometa.slots.augmentation._policies import Augmentation, check_images, check_ops


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _gumbel(shape, generator, dtype, device) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=dtype).clamp(1e-10, 1 - 1e-10).to(device)
    return -torch.log(-torch.log(u))


def conditional_gumbel(logits: Tensor, choice: Tensor, generator, eps: float = 1e-10) -> Tensor:
    """``z̃ ~ p(z | argmax z = choice)``: Gumbel-perturbed logits conditioned on their argmax (RELAX, appendix),
    reparameterised in ``logits``. ``logits (K,)`` shared, ``choice (B,)``; returns ``(B, K)``."""
    b, k = choice.shape[0], logits.shape[-1]
    v = torch.rand((b, k), generator=generator, dtype=logits.dtype).clamp(eps, 1 - eps).to(logits.device)
    log_z = torch.logsumexp(logits, -1)
    top = -torch.log(-torch.log(v.gather(1, choice[:, None])))  # the maximum, Gumbel(log Z) shifted to 0
    top = top + log_z
    others = -torch.log(-torch.log(v) * torch.exp(-logits) + torch.exp(-top))
    return torch.where(torch.nn.functional.one_hot(choice, k).bool(), top.expand(b, k), others)


class DADA(Augmentation):
    """A differentiable augmentation policy (see the module docstring); untrained, it is DADA's search
    space with every probability and magnitude at their initial values (0.5) and uniform sub-policies.

    Args:
        ops: the operations (default: DADA's 15 without ``color``, for grey images); sub-policies are
            all ordered pairs of distinct operations (14 -> 182, 15 -> 210).
        temperature: of the Gumbel-softmax and the relaxed Bernoulli (0.5 in DADA's code).
        init_probability, init_magnitude: the initial application probability and magnitude.
        exact_magnitude_gradient: the operation's own magnitude gradient where it has one (default);
            false: DADA's straight-through magnitude gradient for every operation.
        trainable: whether ω is meta-learnable (``meta_params()``); false gives a fixed policy (the
            ``dada_untrained`` ablation, or a searched policy frozen for final training).

    Example::

        policy = DADA()
        x_aug, y = policy.augment(x, y, generator=torch.Generator().manual_seed(0))

    References: Li et al. 2020, "DADA: Differentiable Automatic Data Augmentation".
    """

    SPACE: ClassVar[dict] = {"temperature": {"float": [0.1, 1.0], "log": True}}
    #: meta-parameters whose gradient equals the derivative of the forward computation (checked by
    #: finite differences); the others get a relaxed (Gumbel / Concrete straight-through) gradient
    EXACT_META: ClassVar[tuple[str, ...]] = ("magnitude_logits",)

    def __init__(self, ops: tuple[str, ...] | list[str] = GREY_OPS, temperature: float = 0.5,
                 init_probability: float = 0.5, init_magnitude: float = 0.5, exact_magnitude_gradient: bool = True,
                 trainable: bool = True):
        super().__init__()
        self.ops = check_ops("DADA", ops)
        if len(self.ops) < 2:
            raise ConfigError(f"DADA's sub-policies are pairs of distinct operations: give at least 2 `ops`. "
                              f"Got {list(self.ops)}.")
        for name, value in (("temperature", temperature),):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"The `{name}` of DADA must be a float > 0. Got {value!r}.")
        for name, value in (("init_probability", init_probability), ("init_magnitude", init_magnitude)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1:
                raise ConfigError(f"The `{name}` of DADA must be a float in (0, 1) (it is learned through a "
                                  f"sigmoid). Got {value!r}.")
        for name, value in (("exact_magnitude_gradient", exact_magnitude_gradient), ("trainable", trainable)):
            if not isinstance(value, bool):
                raise ConfigError(f"The `{name}` of DADA must be true or false. Got {value!r}.")
        self.temperature = float(temperature)
        self.init_probability, self.init_magnitude = float(init_probability), float(init_magnitude)
        self.exact_magnitude_gradient, self.trainable = exact_magnitude_gradient, trainable
        pairs = [(a, b) for a in range(len(self.ops)) for b in range(len(self.ops)) if a != b]
        self.register_buffer("pairs", torch.tensor(pairs, dtype=torch.long), persistent=False)
        k = len(pairs)
        self.policy_logits = nn.Parameter(torch.zeros(k), requires_grad=trainable)
        self.probability_logits = nn.Parameter(torch.full((k, 2), _logit(init_probability)), requires_grad=trainable)
        self.magnitude_logits = nn.Parameter(torch.full((k, 2), _logit(init_magnitude)), requires_grad=trainable)
        exact = exact_magnitude_gradient
        self._ops = [OPS[op] if exact else straight_through_magnitude(OPS[op]) for op in self.ops]

    @property
    def exact_meta(self) -> tuple[str, ...]:
        """Meta-parameters whose gradient is exact: the magnitudes, when every operation's is."""
        no_magnitude = ("identity", "invert", "auto_contrast")
        exact = self.exact_magnitude_gradient and all(op in EXACT_MAGNITUDE or op in no_magnitude for op in self.ops)
        return self.EXACT_META if exact else ()

    def sub_policies(self) -> list[tuple[str, str]]:
        """The sub-policies as pairs of operation names, in the order of ``policy_logits``."""
        return [(self.ops[a], self.ops[b]) for a, b in self.pairs.tolist()]

    def policy(self, meta: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """The policy in its natural units: ``weights (K,)``, ``probabilities (K, 2)``, ``magnitudes (K, 2)``."""
        meta = self._meta(meta)
        return {"weights": torch.softmax(meta["policy_logits"], -1),
                "probabilities": torch.sigmoid(meta["probability_logits"]),
                "magnitudes": torch.sigmoid(meta["magnitude_logits"])}

    def _meta(self, meta):
        own = {"policy_logits": self.policy_logits, "probability_logits": self.probability_logits,
               "magnitude_logits": self.magnitude_logits}
        return own if meta is None else {**own, **meta}

    def sample_choice(self, batch: int, meta: dict[str, Tensor] | None = None,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(z, choice)``: Gumbel-perturbed logits ``(batch, K)`` (differentiable in the logits) and the
        sub-policy of each image, ``argmax z``."""
        logits = self._meta(meta)["policy_logits"]
        z = logits + _gumbel((batch, logits.shape[-1]), generator, logits.dtype, logits.device)
        return z, z.argmax(-1)

    def augment(self, x, y, meta=None, generator=None, choice: Tensor | None = None,
                policy_gradient: str = "straight_through"):
        """The augmented batch; see the module docstring.

        Args:
            choice: the sub-policy of each image, if already drawn (a RELAX search draws it itself);
                then ``policy_gradient`` must be ``"none"``.
            policy_gradient: ``"straight_through"`` (Gumbel-softmax, the default) or ``"none"`` (the
                images carry no gradient to ``policy_logits``; RELAX supplies it).
        """
        check_images("DADA", x)
        if policy_gradient not in ("straight_through", "none"):
            raise ConfigError(f"policy_gradient must be 'straight_through' or 'none'. Got {policy_gradient!r}.")
        meta = self._meta(meta)
        b = x.shape[0]
        if choice is None:
            z, choice = self.sample_choice(b, meta, generator)
        elif policy_gradient != "none":
            raise ConfigError("A given `choice` carries no Gumbel sample to differentiate; pass "
                              "policy_gradient='none' and take the policy gradient from relax_surrogate.")
        chosen_probability = torch.sigmoid(meta["probability_logits"])[choice]     # (B, 2)
        chosen_magnitude = torch.sigmoid(meta["magnitude_logits"])[choice]         # (B, 2)
        ops = self.pairs[choice]                                                   # (B, 2)
        dtype = x.dtype
        out = x
        for stage in range(2):
            p = chosen_probability[:, stage].to(dtype)
            u = torch.rand(b, generator=generator, dtype=dtype).clamp(1e-10, 1 - 1e-10).to(x.device)
            noise = torch.log(u) - torch.log1p(-u)
            soft = torch.sigmoid((torch.log(p) - torch.log1p(-p) + noise) / self.temperature)
            hard = (soft > 0.5).to(dtype)
            applied = (hard + soft - soft.detach()).view(-1, 1, 1, 1)
            signed = torch.tensor([op in SIGNED for op in self.ops], device=x.device)[ops[:, stage]]
            flips = torch.randint(0, 2, (b,), generator=generator).to(x.device).bool()
            magnitude = chosen_magnitude[:, stage].to(dtype) * torch.where(signed & flips, -1.0, 1.0).to(dtype)
            transformed = out
            for index, op in enumerate(self._ops):
                rows = torch.nonzero(ops[:, stage] == index).flatten()
                if len(rows):
                    transformed = transformed.index_put((rows,), op(out[rows], magnitude[rows], generator))
            out = applied * transformed + (1 - applied) * out
        if policy_gradient == "none":
            return out, y
        soft = torch.softmax(z / self.temperature, -1)
        weights = torch.nn.functional.one_hot(choice, soft.shape[-1]).to(soft.dtype)
        weights = weights + soft - soft.detach()
        selected = weights.gather(1, choice[:, None]).view(-1, 1, 1, 1).to(dtype)
        others = (weights.sum(-1, keepdim=True) - weights.gather(1, choice[:, None])).view(-1, 1, 1, 1).to(dtype)
        return selected * out + others * x, y


class UntrainedDADA(DADA):
    """DADA's search space with untrained ω (uniform sub-policies, p = m = 0.5), not meta-learnable: the
    ablation that separates what the search learns from what the space gives."""

    def __init__(self, ops: tuple[str, ...] | list[str] = GREY_OPS, temperature: float = 0.5,
                 init_probability: float = 0.5, init_magnitude: float = 0.5):
        super().__init__(ops=ops, temperature=temperature, init_probability=init_probability,
                         init_magnitude=init_magnitude, trainable=False)


class ControlVariate(nn.Module):
    """RELAX's learned control variate ``c(z) = mean_i r(softmax(z_i / τ))``: a small network on each
    image's relaxed sub-policy sample, averaged over the batch."""

    def __init__(self, choices: int, hidden: int = 32, temperature: float = 0.5, seed: int = 0):
        super().__init__()
        self.temperature = temperature
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(choices, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        with torch.no_grad():
            for layer in (self.net[0], self.net[2]):
                bound = layer.in_features ** -0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.zero_()

    def forward(self, z: Tensor) -> Tensor:
        return self.net(torch.softmax(z / self.temperature, -1)).mean()


def relax_surrogate(objective: Tensor, logits: Tensor, z: Tensor, choice: Tensor, control: ControlVariate,
                    generator: torch.Generator | None) -> Tensor:
    """A scalar whose gradient with respect to ``logits`` is the RELAX estimate of d E[objective] / d logits.

    ``(f(b) - c(z̃)) d log p(b) + d c(z) - d c(z̃)`` with ``b`` the sampled sub-policies (``choice``), ``z``
    their Gumbel sample and ``z̃`` drawn conditionally on ``b`` (:func:`conditional_gumbel`); ``objective``
    is ``f(b)`` (detached inside). Unbiased for any control variate; the control variate is trained to
    minimise the estimate's variance (:func:`relax_variance_loss`).
    """
    z_tilde = conditional_gumbel(logits, choice, generator)
    log_prob = torch.log_softmax(logits, -1)[choice].sum()
    # the coefficient of the score term depends on the control variate's weights, not on the logits
    coefficient = objective.detach() - control(z_tilde.detach())
    return coefficient * log_prob + control(z) - control(z_tilde)


def relax_variance_loss(surrogate: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(gradient estimate, its squared norm)``: the estimate of :func:`relax_surrogate` (with a graph to
    the control variate) and the variance proxy whose gradient trains the control variate."""
    (grad,) = torch.autograd.grad(surrogate, logits, create_graph=True)
    return grad, grad.pow(2).sum()
