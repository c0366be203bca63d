"""Neural-symbolic reasoning: differentiable fuzzy logic over neural predicates (Logic Tensor Networks).

Badreddine, Garcez, Serafini and Spranger 2022, "Logic Tensor Networks" (AIJ), section 2.4; van Krieken,
Acar and van Harmelen 2022, "Analyzing Differentiable Fuzzy Logic Operators" (AIJ). A predicate is a
network with outputs in [0, 1] (:class:`Predicate`); formulas combine truth values with fuzzy
connectives, and quantifiers aggregate them over a batch, so the truth of a knowledge base is a
differentiable function of the networks' weights that training can push towards 1.

Connectives (``a, b`` in [0, 1]); three semantics, each a t-norm ``T``, its dual t-conorm
``S(a, b) = 1 - T(1 - a, 1 - b)`` and the standard negation ``N(a) = 1 - a``:

    semantics      T(a, b) (and)         S(a, b) (or)          residuum I(a, b) (implies)
    product        a * b                 a + b - a * b         1 if a <= b else b / a     (Goguen)
    goedel         min(a, b)             max(a, b)             1 if a <= b else b
    lukasiewicz    max(0, a + b - 1)     min(1, a + b)         min(1, 1 - a + b)

The residuum is the default implication: ``I(a, b) = sup { c : T(a, c) <= b }``, so modus ponens
``T(a, I(a, b)) <= b`` holds. ``implication="reichenbach"`` selects ``1 - a + a * b`` instead (the
S-implication of the product logic, LTN's default, smooth everywhere).

Quantifiers (LTN eq. 12 and 13), generalised means over the dimension quantified:

    exists x: A(x)  =  pMean       (1/n * sum a_i^p) ^ (1/p)
    forall x: A(x)  =  pMeanError  1 - (1/n * sum (1 - a_i)^p) ^ (1/p)

``p = 1`` is the mean; as ``p`` grows they approach max and min. Both are singular where the mean
inside the root is zero (exists over all-false, forall over all-true): ``d/dM M^(1/p)`` is infinite
there and autograd returns NaN. With ``stable=True`` (the default), LTN's projections keep the
inputs off the singular boundary: exists reads ``(1 - eps) a + eps`` and forall reads ``(1 - eps) a``,
and the Goguen residuum divides by ``(1 - eps) a + eps`` (its derivative ``-b / a^2`` grows without
bound as ``a -> 0``). The t-norms and t-conorms need no projection: their derivatives lie in [0, 1].
So with ``stable=True`` crisp quantifiers are off by at most ``eps``, and the Goguen implication (where
``a > b``) by at most ``eps (1 - a) / ((1 - eps) a + eps)``: small unless ``a`` is near ``eps`` or below.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FuzzyLogic", "Predicate", "SEMANTICS"]

SEMANTICS = ("product", "goedel", "lukasiewicz")
IMPLICATIONS = ("residuum", "reichenbach")


def _truth(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of truth values in [0, 1]")
    if ((value < 0) | (value > 1) | value.isnan()).any():
        raise ValueError(f"{name} must hold truth values in [0, 1], got values in [{float(value.min())}, "
                         f"{float(value.max())}]")
    return value


class FuzzyLogic:
    """The connectives and quantifiers of one fuzzy semantics; see the module docstring for the formulas.

    Args:
        semantics: "product", "goedel" or "lukasiewicz".
        implication: "residuum" (of the semantics' t-norm) or "reichenbach" (``1 - a + a b``).
        p_exists: ``p >= 1`` of the pMean behind :meth:`exists`.
        p_forall: ``p >= 1`` of the pMeanError behind :meth:`forall`.
        stable: project inputs off the singular boundaries (LTN's ``pi_0`` / ``pi_1``) by ``eps``.
        eps: the projection margin.
    """

    def __init__(self, semantics: str = "product", *, implication: str = "residuum", p_exists: float = 2.0,
                 p_forall: float = 2.0, stable: bool = True, eps: float = 1e-4):
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {SEMANTICS}, got {semantics!r}")
        if implication not in IMPLICATIONS:
            raise ValueError(f"implication must be one of {IMPLICATIONS}, got {implication!r}")
        for name, p in (("p_exists", p_exists), ("p_forall", p_forall)):
            if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 1):
                raise ValueError(f"{name} must be a finite number >= 1, got {p!r}")
        if not (isinstance(eps, float) and 0 < eps < 0.5):
            raise ValueError(f"eps must be a float in (0, 0.5), got {eps!r}")
        self.semantics, self.implication = semantics, implication
        self.p_exists, self.p_forall = float(p_exists), float(p_forall)
        self.stable, self.eps = stable, eps

    # LTN's projections: pi_0 maps [0, 1] into [eps, 1], pi_1 into [0, 1 - eps].
    def _off_zero(self, a: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) * a + self.eps if self.stable else a

    def _off_one(self, a: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) * a if self.stable else a

    def not_(self, a: torch.Tensor) -> torch.Tensor:
        return 1 - _truth("a", a)

    def and_(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = _truth("a", a), _truth("b", b)
        if self.semantics == "product":
            return a * b
        if self.semantics == "goedel":
            return torch.minimum(a, b)
        return (a + b - 1).clamp(min=0)

    def or_(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = _truth("a", a), _truth("b", b)
        if self.semantics == "product":
            return a + b - a * b
        if self.semantics == "goedel":
            return torch.maximum(a, b)
        return (a + b).clamp(max=1)

    def implies(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = _truth("a", a), _truth("b", b)
        if self.implication == "reichenbach":
            return 1 - a + a * b
        if self.semantics == "lukasiewicz":
            return (1 - a + b).clamp(max=1)
        holds = a <= b  # the residuum is 1 wherever a <= b
        if self.semantics == "goedel":
            return torch.where(holds, torch.ones_like(b), b)
        # Goguen: b / a where a > b. The denominator is a itself off that region, so the unused branch
        # of torch.where never divides by zero (a NaN there would still poison the gradient).
        denominator = torch.where(holds, torch.ones_like(a), self._off_zero(a))
        return torch.where(holds, torch.ones_like(b), b / denominator)

    def exists(self, a: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
        """pMean over ``dim`` (all dimensions when None)."""
        a = self._off_zero(_truth("a", a))
        p = self.p_exists
        return (a**p).mean(dim=dim) ** (1 / p)

    def forall(self, a: torch.Tensor, dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
        """pMeanError over ``dim`` (all dimensions when None)."""
        a = self._off_one(_truth("a", a))
        p = self.p_forall
        return 1 - ((1 - a) ** p).mean(dim=dim) ** (1 / p)


class Predicate(nn.Module):
    """A neural predicate: ``sigmoid(network(x))`` squeezed to ``(B,)``, the truth of P(x_b)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.network(x)
        if logits.dim() != 2 or logits.shape[1] != 1:
            raise ValueError(f"network(x) must have shape (B, 1), got {tuple(logits.shape)}")
        return torch.sigmoid(logits).squeeze(1)  # (B,)
