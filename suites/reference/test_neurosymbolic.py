"""reference/neurosymbolic.py: fuzzy connectives and quantifiers.

* each connective and quantifier against LTNtorch's fuzzy operators (the Logic Tensor Networks library):
  values and gradients, plain and with the stable projections, float64 gold against float32 and float64;
* crisp truth tables at {0, 1} for every semantics and both implications;
* t-norm laws (commutative, 1 is the unit, De Morgan duality), residuation (I(a, b) = 1 iff a <= b,
  modus ponens T(a, I(a, b)) <= b), monotonicity in every argument;
* quantifiers: p = 1 is the mean, the power-mean bounds towards max / min, crisp values;
* finite gradients everywhere including exactly at 0 and 1, where naive p-means give NaN;
* a neural predicate trained to satisfy a small knowledge base.
"""

import itertools
import math

import ltn.fuzzy_ops as ops
import pytest
import torch

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.neurosymbolic import SEMANTICS, FuzzyLogic, Predicate

DTYPES = [torch.float64, torch.float32]
IMPLICATIONS = ["residuum", "reichenbach"]


def _truths(seed, shape, dtype=torch.float64):
    return (random_tensor(shape, seed=seed, dtype=torch.float64, distribution="uniform").abs()).to(dtype)


def _ltn_connectives(semantics: str, implication: str, stable: bool):
    """LTNtorch's fuzzy operators for (and, or, implies): the library Logic Tensor Networks ship with."""
    if implication == "reichenbach":  # smooth everywhere: ours never projects it, so neither does LTN's here
        implies = ops.ImpliesReichenbach(stable=False)
    else:
        implies = {"product": ops.ImpliesGoguen(stable=stable), "goedel": ops.ImpliesGodel(),
                   "lukasiewicz": ops.ImpliesLuk()}[semantics]
    if semantics == "product":
        return ops.AndProd(stable=stable), ops.OrProbSum(stable=stable), implies
    if semantics == "goedel":
        return ops.AndMin(), ops.OrMax(), implies
    return ops.AndLuk(), ops.OrLuk(), implies


def _outside_goguen_band(a, b, dtype, logic):
    """Where LTN's stable Goguen implication and ours are the same function: LTN tests ``pi_0(a) <= b``, ours
    ``a <= b`` (the residuum's condition; it projects only the divisor). For ``a <= b < pi_0(a)`` LTN gives
    ``b / pi_0(a)`` and ours 1, a gap up to ``eps (1 - a) / pi_0(a)``, near 1 for tiny ``a`` (about one seed in
    200 draws such a pair). The band is computed in the dtype LTN computes in."""
    a_low, b_low = a.detach().to(dtype), b.detach().to(dtype)
    return ~((a_low <= b_low) & ((1 - logic.eps) * a_low + logic.eps > b_low))


# LTNtorch's stable=True projects the product semantics' operators (pi_0 / pi_1 with eps = 1e-4, as ours).
# Ours projects only where a derivative is unbounded (the Goguen residuum, the quantifiers); LTN also projects
# the product t-norm, t-conorm and Reichenbach's implication, so with stable=True those are compared unprojected.
@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("implication", IMPLICATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("semantics", SEMANTICS)
def test_connectives_match_ltntorch(seed, dtype, semantics, implication, stable):
    # 97: odd, with both a < b and a > b. The inputs are rounded to the dtype under test first, so gold, baseline
    # and candidate see the same values: a residuum's branch (a <= b) must not flip between them.
    a = _truths(seed, (97,)).to(dtype).double().requires_grad_()
    b = _truths(seed + 1, (97,)).to(dtype).double().requires_grad_()
    logic = FuzzyLogic(semantics, implication=implication, stable=stable)
    theirs = dict(zip(("and", "or", "implies"), _ltn_connectives(semantics, implication, stable), strict=True))
    ours = {"and": logic.and_, "or": logic.or_, "implies": logic.implies}
    names = ["implies"] if stable and semantics == "product" else ["and", "or", "implies"]
    weights = random_tensor((97,), seed=seed + 2, dtype=torch.float64)
    def grads(value, inputs, w):  # Goedel's residuum does not depend on a smoothly: its gradient is zero
        return torch.autograd.grad((value * w).sum(), inputs, allow_unused=True, materialize_grads=True)

    for name in names:
        gold = ours[name](a, b)
        gold_grads = grads(gold, (a, b), weights)
        low = [x.detach().to(dtype).requires_grad_() for x in (a, b)]
        baseline = ours[name](*low)
        baseline_grads = grads(baseline, low, weights.to(dtype))
        cand_in = [x.detach().to(dtype).requires_grad_() for x in (a, b)]
        candidate = theirs[name](*cand_in)
        cand_grads = grads(candidate, cand_in, weights.to(dtype))
        label = f"LTNtorch {semantics} {name} ({implication}, stable={stable})"
        compared = _outside_goguen_band(a, b, dtype, logic) if name == "implies" and semantics == "product" \
            and implication == "residuum" and stable else torch.ones_like(a, dtype=torch.bool)
        # Inside the band ours is the residuum's own value, 1 (a <= b), where LTN's stable operator divides.
        assert torch.all(gold.detach()[~compared] == 1), f"{label}: the residuum is not 1 where a <= b"
        assert_agrees(candidate.detach()[compared], gold.detach()[compared], baseline.detach()[compared], name=label)
        for arg, c, g, bl in zip("ab", cand_grads, gold_grads, baseline_grads, strict=True):
            assert_agrees(c[compared], g[compared], bl[compared], gradient=True, name=f"{label} d/d{arg}")
    assert_agrees(ops.NotStandard()(a.detach()), logic.not_(a.detach()), name="LTNtorch not")


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("implication", IMPLICATIONS)
@pytest.mark.parametrize("semantics", SEMANTICS)
def test_crisp_truth_tables(semantics, implication, stable):
    logic = FuzzyLogic(semantics, implication=implication, stable=stable)
    for x, y in itertools.product((0.0, 1.0), repeat=2):
        a, b = torch.tensor([x], dtype=torch.float64), torch.tensor([y], dtype=torch.float64)
        assert logic.and_(a, b).item() == float(x and y), (x, y)
        assert logic.or_(a, b).item() == float(x or y), (x, y)
        assert logic.implies(a, b).item() == float((not x) or y), (x, y)
        assert logic.not_(a).item() == float(not x)


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_crisp_quantifiers(semantics):
    exact, stable = FuzzyLogic(semantics, stable=False), FuzzyLogic(semantics, stable=True)
    true, false = torch.ones(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for logic, margin in ((exact, 0.0), (stable, stable.eps)):  # the projections move crisp values by <= eps
        assert abs(logic.forall(true).item() - 1) <= margin and abs(logic.exists(true).item() - 1) <= margin
        assert abs(logic.forall(false).item()) <= margin and abs(logic.exists(false).item()) <= margin


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_t_norm_laws_and_residuation(seed, semantics):
    a, b = _truths(seed, (200,)), _truths(seed + 1, (200,))
    logic = FuzzyLogic(semantics, stable=False)
    assert torch.equal(logic.and_(a, b), logic.and_(b, a)) and torch.equal(logic.or_(a, b), logic.or_(b, a))
    assert_agrees(logic.and_(a, torch.ones_like(a)), a, name="T(a, 1) = a")
    assert_agrees(logic.or_(a, torch.zeros_like(a)), a, name="S(a, 0) = a")
    assert_agrees(logic.or_(a, b), logic.not_(logic.and_(logic.not_(a), logic.not_(b))), name="De Morgan")
    implied = logic.implies(a, b)
    assert torch.equal(implied == 1, a <= b) or semantics == "lukasiewicz" and torch.equal(
        implied >= 1 - 1e-15, a <= b)  # 1 - a + b rounds: equality up to one ulp of 1
    assert (logic.and_(a, implied) <= b + 1e-15).all()  # modus ponens; 1e-15: one rounding of the product


@pytest.mark.parametrize("implication", IMPLICATIONS)
@pytest.mark.parametrize("semantics", SEMANTICS)
def test_monotonicity(seed, semantics, implication):
    logic = FuzzyLogic(semantics, implication=implication)
    low, high = _truths(seed, (300,)), _truths(seed + 1, (300,))
    low, high = torch.minimum(low, high), torch.maximum(low, high)
    other = _truths(seed + 2, (300,))
    slack = 1e-15  # one rounding: monotone up to an ulp of values <= 1
    for op in (logic.and_, logic.or_):
        assert (op(low, other) <= op(high, other) + slack).all()
        assert (op(other, low) <= op(other, high) + slack).all()
    assert (logic.implies(low, other) >= logic.implies(high, other) - slack).all()  # antitone in the premise
    assert (logic.implies(other, low) <= logic.implies(other, high) + slack).all()  # monotone in the conclusion
    assert (logic.not_(low) >= logic.not_(high)).all()
    rows_low, rows_high = low.view(30, 10), high.view(30, 10)  # raising any element raises the quantifier
    assert (logic.forall(rows_low, dim=1) <= logic.forall(rows_high, dim=1) + slack).all()
    assert (logic.exists(rows_low, dim=1) <= logic.exists(rows_high, dim=1) + slack).all()


@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_quantifiers_match_ltntorch(seed, dtype, stable):
    a = _truths(seed, (6, 13)).requires_grad_()
    for p in (1.0, 2.0, 5.5):
        logic = FuzzyLogic(p_exists=p, p_forall=p, stable=stable)
        for ours, theirs in ((logic.exists, ops.AggregPMean(p=p, stable=stable)),
                             (logic.forall, ops.AggregPMeanError(p=p, stable=stable))):
            gold = ours(a, dim=1)
            gold_grad, = torch.autograd.grad(gold.sum(), a)
            low = a.detach().to(dtype).requires_grad_()
            baseline = ours(low, dim=1)
            baseline_grad, = torch.autograd.grad(baseline.sum(), low)
            cand_in = a.detach().to(dtype).requires_grad_()
            candidate = theirs(cand_in, dim=1)
            cand_grad, = torch.autograd.grad(candidate.sum(), cand_in)
            label = f"LTNtorch {type(theirs).__name__} p={p} stable={stable}"
            assert_agrees(candidate.detach(), gold.detach(), baseline.detach(), name=label)
            assert_agrees(cand_grad, gold_grad, baseline_grad, gradient=True, name=f"{label} gradient")
    mean = FuzzyLogic(p_exists=1, p_forall=1, stable=False)
    assert_agrees(mean.exists(a.detach(), dim=1), a.detach().mean(1), name="p = 1 is the mean")
    assert_agrees(mean.forall(a.detach(), dim=1), a.detach().mean(1), name="p = 1 is the mean")


def test_quantifiers_approach_max_and_min(seed):
    # Power-mean bounds over n values: n^(-1/p) max(x) <= pMean(x) <= max(x). For exists x = a; for
    # forall, 1 - pMeanError(a) = pMean(1 - a) and max(1 - a) = 1 - min(a). The bounds tighten as p grows.
    # 1e-15: a few roundings of values <= 1.
    n = 50
    a = _truths(seed, (4, n))
    top, bottom = a.max(1).values, a.min(1).values
    for p in (2.0, 10.0, 100.0):
        logic = FuzzyLogic(p_exists=p, p_forall=p, stable=False)
        exists, doubt = logic.exists(a, dim=1), 1 - logic.forall(a, dim=1)
        assert (n ** (-1 / p) * top <= exists + 1e-15).all() and (exists <= top + 1e-15).all()
        assert (n ** (-1 / p) * (1 - bottom) <= doubt + 1e-15).all() and (doubt <= 1 - bottom + 1e-15).all()


@pytest.mark.parametrize("implication", IMPLICATIONS)
@pytest.mark.parametrize("semantics", SEMANTICS)
def test_gradients_are_finite_at_zero_and_one(seed, semantics, implication):
    logic = FuzzyLogic(semantics, implication=implication)  # stable=True: the default
    corners = torch.tensor([0.0, 1.0, 0.0, 1.0, 1e-12, 1 - 1e-12], dtype=torch.float64)
    others = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    for op in (logic.and_, logic.or_, logic.implies):
        for x, y in ((corners, others), (others, corners)):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            # allow_unused: the Goedel residuum reads the premise only through the comparison a <= b
            for g in torch.autograd.grad(op(a, b).sum(), (a, b), allow_unused=True):
                assert g is None or torch.isfinite(g).all(), op.__name__
    for values in (torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64), others):
        for quantifier in (logic.exists, logic.forall):
            a = values.clone().requires_grad_()
            grad, = torch.autograd.grad(quantifier(a), a)
            assert torch.isfinite(grad).all(), (quantifier.__name__, values)


def test_naive_p_means_are_singular_where_the_stable_ones_are_not():
    naive = FuzzyLogic(stable=False)
    false = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    grad, = torch.autograd.grad(naive.exists(false), false)
    assert torch.isnan(grad).all()  # 0 * inf: why stable=True is the default
    true = torch.ones(4, dtype=torch.float64, requires_grad=True)
    grad, = torch.autograd.grad(naive.forall(true), true)
    assert torch.isnan(grad).all()


def test_stable_gradients_agree_with_finite_differences_in_the_interior(seed):
    logic = FuzzyLogic("product", p_exists=3.0, p_forall=2.5)
    a = _truths(seed, (7,)).clamp(0.05, 0.95).requires_grad_()
    for quantifier in (logic.exists, logic.forall):
        assert torch.autograd.gradcheck(quantifier, (a,))


def test_a_neural_predicate_learns_a_knowledge_base(seed):
    # Knowledge base over 2-D points: forall x in A: P(x); forall x in B: not P(x); forall x: P(x) -> Q(x).
    torch.manual_seed(seed)
    logic = FuzzyLogic("product", implication="reichenbach", p_forall=2.0)
    points_a = random_tensor((20, 2), seed=seed, dtype=torch.float64, scale=0.3) + 1.5
    points_b = random_tensor((20, 2), seed=seed + 1, dtype=torch.float64, scale=0.3) - 1.5
    everything = torch.cat([points_a, points_b])
    p = Predicate(torch.nn.Linear(2, 1)).double()
    q = Predicate(torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))).double()
    optimizer = torch.optim.Adam([*p.parameters(), *q.parameters()], lr=0.1)

    def satisfaction():
        axioms = torch.stack([logic.forall(p(points_a)), logic.forall(logic.not_(p(points_b))),
                              logic.forall(logic.implies(p(everything), q(everything)))])
        return logic.forall(axioms)

    before = float(satisfaction().detach())
    for _ in range(60):
        optimizer.zero_grad()
        (1 - satisfaction()).backward()
        optimizer.step()
    after = float(satisfaction().detach())
    assert after > 0.9 and after > before, (before, after)
    assert (q(points_a) > 0.5).all()  # Q was never shown A directly: it follows from P(A) and P -> Q


def test_bad_inputs_raise_naming_the_argument():
    logic = FuzzyLogic()
    half = torch.full((3,), 0.5)
    cases = [
        (lambda: FuzzyLogic("boolean"), ValueError, "semantics must be one of"),
        (lambda: FuzzyLogic(implication="material"), ValueError, "implication must be one of"),
        (lambda: FuzzyLogic(p_exists=0.5), ValueError, "p_exists must be a finite number >= 1"),
        (lambda: FuzzyLogic(p_forall=math.inf), ValueError, "p_forall must be"),
        (lambda: FuzzyLogic(eps=0.0), ValueError, "eps must be"),
        (lambda: logic.and_(half, torch.tensor([0.2, 1.5, 0.1])), ValueError,
         "b must hold truth values in \\[0, 1\\]"),
        (lambda: logic.implies(torch.tensor([-0.1, 0.5, 0.5]), half), ValueError, "a must hold truth values"),
        (lambda: logic.forall(torch.tensor([math.nan])), ValueError, "a must hold truth values"),
        (lambda: logic.or_(half, torch.tensor([1, 0, 1])), TypeError, "b must be a floating-point tensor"),
        (lambda: Predicate(torch.nn.Linear(2, 3))(torch.randn(4, 2)), ValueError, "network\\(x\\) must have shape"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
