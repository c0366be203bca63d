"""reference/multitask.py against closed forms.

* the per-task losses on a case worked out by hand, and float32 against float64 gold;
* fixed weights: value sum w_i L_i and, by linearity, the parameter gradient sum w_i dL_i/dtheta;
* uncertainty weights (Kendall et al. 2018): value, dL/dL_i = exp(-s_i)/2, dL/ds_i = (1 - exp(-s_i) L_i)/2,
  and the stationary point s_i = log L_i;
* the heads share the encoder and nothing else.
"""

import math

import pytest
import torch

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.multitask import MultiTaskConfig, MultiTaskModel, UncertaintyWeightedLoss, weighted_loss

DTYPES = [torch.float64, torch.float32]


def _batch(seed, config, b=9):
    x = random_tensor((b, config.in_features), seed=seed, dtype=torch.float64)
    targets = {"regression": random_tensor((b, config.regression_targets), seed=seed + 1, dtype=torch.float64),
               "classification": torch.randint(0, config.num_classes, (b,),
                                               generator=torch.Generator().manual_seed(seed))}
    return x, targets


def _model(seed, config):
    torch.manual_seed(seed)
    return MultiTaskModel(config).double()


def test_task_losses_worked_out_by_hand():
    # The reference calls torch's F.mse_loss and F.cross_entropy; what can go wrong is what it feeds them.
    # Regression: outputs (1, 3) against targets (0, 1): squared errors 1 and 4, mean 2.5.
    # Classification: logits (0, log 3) with label 1: -log(3 / 4) = log(4/3); logits (log 2, 0) with label 0:
    # -log(2 / 3) = log(3/2); the mean is (log(4/3) + log(3/2)) / 2 = log(2) / 2 = 0.34657.
    model = MultiTaskModel(MultiTaskConfig(in_features=3, regression_targets=1, num_classes=2)).double()
    outputs = {"regression": torch.tensor([[1.0], [3.0]], dtype=torch.float64),
               "classification": torch.tensor([[0.0, math.log(3)], [math.log(2), 0.0]], dtype=torch.float64)}
    targets = {"regression": torch.tensor([[0.0], [1.0]], dtype=torch.float64), "classification": torch.tensor([1, 0])}
    expected = torch.tensor([2.5, math.log(2) / 2], dtype=torch.float64)
    assert_agrees(model.task_losses(outputs, targets), expected, name="hand case task losses")


def test_task_losses_in_float32_agree_with_float64_gold(seed):
    config = MultiTaskConfig(in_features=7, hidden_size=12, regression_targets=2, num_classes=5)
    model = _model(seed, config)
    x, targets = _batch(seed, config)
    gold = model.task_losses(model(x), targets)
    low = {k: (v.float() if v.is_floating_point() else v) for k, v in targets.items()}
    candidate = model.float().task_losses(model(x.float()), low)
    assert_agrees(candidate.detach(), gold.detach(), name="task losses in float32")  # element-wise, no baseline


def test_fixed_weights_value_and_gradient_are_linear(seed):
    config = MultiTaskConfig()
    model = _model(seed, config)
    x, targets = _batch(seed, config)
    weights = [0.3, 1.7]
    losses = model.task_losses(model(x), targets)
    total = weighted_loss(losses, weights)
    assert_agrees(total, 0.3 * losses[0] + 1.7 * losses[1], name="sum w_i L_i")
    params = list(model.parameters())
    grad_total = torch.autograd.grad(total, params, retain_graph=True)
    grad_each = [torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True) for i in range(2)]
    for p, g, g0, g1 in zip(params, grad_total, *grad_each, strict=True):
        expected = sum(w * (torch.zeros_like(p) if gi is None else gi) for w, gi in zip(weights, (g0, g1), strict=True))
        assert_agrees(g, expected, gradient=True, name="d(sum w_i L_i)/dtheta")


def test_heads_share_the_encoder_and_nothing_else(seed):
    config = MultiTaskConfig()
    model = _model(seed, config)
    x, targets = _batch(seed, config)
    losses = model.task_losses(model(x), targets)
    losses[0].backward()  # the regression loss alone
    untouched = model.heads["classification"].weight.grad  # None, or zeros from the backward of torch.stack
    assert untouched is None or not untouched.any()
    assert model.heads["regression"].weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


@pytest.mark.parametrize("dtype", DTYPES)
def test_uncertainty_weighting_value_and_gradients_closed_form(seed, dtype):
    s = random_tensor((3,), seed=seed, dtype=torch.float64)
    task_losses = random_tensor((3,), seed=seed + 1, dtype=torch.float64).abs() + 0.1
    criterion = UncertaintyWeightedLoss(3).double()
    with torch.no_grad():
        criterion.log_variances.copy_(s)
    losses = task_losses.clone().requires_grad_()
    gold = criterion(losses)
    d_losses, d_s = torch.autograd.grad(gold, (losses, criterion.log_variances))
    # Closed forms, in the dtype under test.
    s_low, l_low = s.to(dtype), task_losses.to(dtype)
    value = (0.5 * torch.exp(-s_low) * l_low + 0.5 * s_low).sum()
    criterion_low = UncertaintyWeightedLoss(3).to(dtype)
    with torch.no_grad():
        criterion_low.log_variances.copy_(s_low)
    baseline = criterion_low(l_low)
    assert_agrees(value, gold.detach(), baseline.detach(), name="uncertainty-weighted loss")
    assert_agrees(0.5 * torch.exp(-s_low), d_losses, gradient=True, name="dL/dL_i")
    assert_agrees(0.5 * (1 - torch.exp(-s_low) * l_low), d_s, gradient=True, name="dL/ds_i")


def test_uncertainty_weights_settle_at_log_of_each_loss(seed):
    task_losses = random_tensor((2,), seed=seed, dtype=torch.float64).abs() + 0.2
    criterion = UncertaintyWeightedLoss(2).double()
    with torch.no_grad():
        criterion.log_variances.copy_(task_losses.log())  # the stationary point s_i = log L_i
    d_s, = torch.autograd.grad(criterion(task_losses), criterion.log_variances)
    assert float(d_s.abs().max()) < 1e-12  # (1 - exp(-log L) L) / 2 = 0 up to rounding
    # Gradient descent from s = 0 reaches it: the loss in s_i is convex (second derivative exp(-s) L / 2 > 0).
    criterion = UncertaintyWeightedLoss(2).double()
    optimizer = torch.optim.SGD(criterion.parameters(), lr=1.0)
    for _ in range(300):
        optimizer.zero_grad()
        criterion(task_losses).backward()
        optimizer.step()
    assert_agrees(criterion.log_variances.detach(), task_losses.log(), name="argmin s_i = log L_i")
    minimum = (0.5 + 0.5 * task_losses.log()).sum()  # exp(-log L) L / 2 + log(L) / 2 per task
    assert_agrees(criterion(task_losses).detach(), minimum, name="minimum value")


def test_bad_inputs_raise_naming_the_argument():
    model = MultiTaskModel(MultiTaskConfig(in_features=4, num_classes=3))
    out = model(torch.randn(5, 4))
    good = {"regression": torch.randn(5, 1), "classification": torch.tensor([0, 1, 2, 0, 1])}
    cases = [
        (lambda: MultiTaskConfig(num_classes=1), ValueError, "num_classes must be"),
        (lambda: MultiTaskConfig(hidden_size=0), ValueError, "hidden_size must be"),
        (lambda: MultiTaskConfig(dropout=1.0), ValueError, "dropout must be"),
        (lambda: model(torch.randn(5, 3)), ValueError, "x must have shape \\(B, in_features=4\\)"),
        (lambda: model.task_losses(out, {"regression": good["regression"]}), ValueError, "missing \\['classif"),
        (lambda: model.task_losses(out, good | {"regression": torch.randn(5)}), ValueError,
         "targets\\['regression'\\] must have shape"),
        (lambda: model.task_losses(out, good | {"classification": torch.rand(5)}), ValueError,
         "targets\\['classification'\\] must be an integer"),
        (lambda: weighted_loss(torch.rand(2), [1.0]), ValueError, "weights must have one entry per task"),
        (lambda: weighted_loss(torch.rand(2), [1.0, -1.0]), ValueError, "weights must be non-negative"),
        (lambda: weighted_loss(torch.rand(2, 2), [1.0, 1.0]), ValueError, "losses must be a 1-D"),
        (lambda: UncertaintyWeightedLoss(0), ValueError, "num_tasks must be"),
        (lambda: UncertaintyWeightedLoss(2)(torch.rand(3)), ValueError, "one entry per task \\(2\\)"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
