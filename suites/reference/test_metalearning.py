"""reference/metalearning.py: MAML and first-order MAML against closed forms and finite differences.

Linear regression makes MAML exact in closed form. For ``f(x) = w . x~`` (``x~`` = x with a 1 appended
for the bias) and ``L_S(w) = 1/n |X~ w - y|^2``:

    g_S(w) = 2/n X~^T (X~ w - y),    H_S = 2/n X~^T X~  (constant),    w_{s+1} = w_s - alpha g_S(w_s)

so ``d w_k / d w = (I - alpha H_S)^k`` and, averaging over tasks,

    MAML:    d meta / d w = mean_i (I - alpha H_Si)^k g_Qi(w_i^(k))
    FOMAML:  d meta / d w = mean_i g_Qi(w_i^(k))

For a nonlinear network the MAML meta-gradient is checked against central finite differences of the
meta-loss in float64.
"""

import pytest
import torch
from torch import nn

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.metalearning import Task, adapt, maml_step

DTYPES = [torch.float64, torch.float32]


def _tasks(seed, n_tasks, d, n_support, n_query, dtype=torch.float64):
    tasks = []
    for i in range(n_tasks):
        s = seed + 10 * i
        w_true = random_tensor((d, 1), seed=s, dtype=torch.float64)
        sx = random_tensor((n_support, d), seed=s + 1, dtype=torch.float64)
        qx = random_tensor((n_query, d), seed=s + 2, dtype=torch.float64)
        noise = random_tensor((n_support + n_query, 1), seed=s + 3, dtype=torch.float64, scale=0.1)
        tasks.append(Task(sx, sx @ w_true + noise[:n_support], qx, qx @ w_true + noise[n_support:]))
    return [Task(*(t.to(dtype) for t in task)) for task in tasks]


def _closed_form_meta_gradient(w, tasks, alpha, steps, first_order, fit_bias=True, bias=None):
    """The formulas in the module docstring, for w = (weights, bias) or weights alone with a fixed bias."""
    total = torch.zeros_like(w)
    for sx, sy, qx, qy in tasks:
        def design(x):
            return torch.cat([x, torch.ones_like(x[:, :1])], dim=1) if fit_bias else x

        def target(y):
            return y if fit_bias else y - bias

        xs, xq = design(sx), design(qx)
        hessian = 2 / xs.shape[0] * xs.T @ xs
        adapted = w
        for _ in range(steps):
            adapted = adapted - alpha * 2 / xs.shape[0] * xs.T @ (xs @ adapted - target(sy))
        g_query = 2 / xq.shape[0] * xq.T @ (xq @ adapted - target(qy))
        if not first_order:
            jacobian = torch.linalg.matrix_power(torch.eye(len(w), dtype=w.dtype) - alpha * hessian, steps)
            g_query = jacobian @ g_query  # (I - alpha H)^k is symmetric
        total = total + g_query
    return total / len(tasks)


def _linear(seed, d, dtype):
    torch.manual_seed(seed)
    return nn.Linear(d, 1).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first_order", [False, True], ids=["maml", "fomaml"])
@pytest.mark.parametrize("steps", [1, 3])
def test_linear_regression_meta_gradient_matches_closed_form(seed, dtype, first_order, steps):
    d, alpha = 5, 0.05
    tasks = _tasks(seed, 3, d, n_support=7, n_query=9)  # 7 and 9: unequal, not powers of two
    model = _linear(seed, d, torch.float64)
    _, gold = maml_step(model, tasks, inner_lr=alpha, inner_steps=steps, first_order=first_order)
    low = _linear(seed, d, dtype)
    low.load_state_dict(model.state_dict())
    low_tasks = [Task(*(t.to(dtype) for t in task)) for task in tasks]
    _, baseline = maml_step(low, low_tasks, inner_lr=alpha, inner_steps=steps, first_order=first_order)
    w = torch.cat([low.weight.detach().flatten(), low.bias.detach()])[:, None]  # (d + 1, 1)
    closed = _closed_form_meta_gradient(w, low_tasks, alpha, steps, first_order)
    assert_agrees(closed[:d].T, gold["weight"], baseline["weight"], gradient=True, name="d meta / d weight")
    assert_agrees(closed[d:].flatten(), gold["bias"], baseline["bias"], gradient=True, name="d meta / d bias")


def test_second_order_term_matters(seed):
    # MAML and FOMAML must differ by alpha * H g (to first order in alpha): the test above can tell them apart.
    tasks = _tasks(seed, 2, 4, 6, 6)
    model = _linear(seed, 4, torch.float64)
    _, maml = maml_step(model, tasks, inner_lr=0.1)
    _, fomaml = maml_step(model, tasks, inner_lr=0.1, first_order=True)
    difference = float((maml["weight"] - fomaml["weight"]).abs().max())
    assert difference > 1e-3 * float(maml["weight"].abs().max())


def test_frozen_parameters_are_neither_adapted_nor_meta_learned(seed):
    d, alpha = 4, 0.07
    tasks = _tasks(seed, 2, d, 6, 5)
    model = _linear(seed, d, torch.float64)
    model.bias.requires_grad_(False)
    _, gradients = maml_step(model, tasks, inner_lr=alpha, inner_steps=2)
    assert set(gradients) == {"weight"} and model.bias.grad is None
    closed = _closed_form_meta_gradient(model.weight.detach().T, tasks, alpha, 2, False, fit_bias=False,
                                        bias=model.bias.detach())
    assert_agrees(gradients["weight"], closed.T, gradient=True, name="d meta / d weight, bias fixed")


def test_mlp_meta_gradient_matches_finite_differences(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    tasks = _tasks(seed, 3, 3, 5, 6)
    kwargs = dict(inner_lr=0.1, inner_steps=2)
    _, gradients = maml_step(model, tasks, **kwargs)
    _, first_order = maml_step(model, tasks, first_order=True, **kwargs)
    names = [n for n, _ in model.named_parameters()]
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}

    def meta_loss_at(params):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(params[n])
        return float(maml_step(model, tasks, **kwargs)[0])

    h = 1e-5
    fomaml_gaps = []
    for direction_seed in range(3):
        v = {n: random_tensor(theta[n].shape, seed=seed + 100 + direction_seed, dtype=torch.float64) for n in names}
        plus = meta_loss_at({n: theta[n] + h * v[n] for n in names})
        minus = meta_loss_at({n: theta[n] - h * v[n] for n in names})
        numeric = (plus - minus) / (2 * h)
        analytic = float(sum((gradients[n] * v[n]).sum() for n in names))
        fomaml = float(sum((first_order[n] * v[n]).sum() for n in names))
        # Central differences with h = 1e-5 in float64: truncation h^2 |f'''| / 6 ~ 1e-10 and rounding
        # eps |f| / h ~ 1e-11 for these O(1) losses; 1e-7 (relative to the directional derivative, at least
        # 1) leaves ~1000x headroom and stays far below the MAML - FOMAML gap asserted next.
        bound = 1e-7 * max(1.0, abs(analytic))
        assert abs(numeric - analytic) <= bound, (numeric, analytic)
        fomaml_gaps.append(abs(numeric - fomaml) / bound)
    assert max(fomaml_gaps) > 100, fomaml_gaps  # the check would catch FOMAML posing as MAML


def test_maml_step_writes_grad_and_steps_the_optimizer(seed):
    model = _linear(seed, 3, torch.float64)
    tasks = _tasks(seed, 2, 3, 4, 4)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    _, gradients = maml_step(model, tasks, inner_lr=0.1, optimizer=optimizer)
    assert torch.equal(model.weight.grad, gradients["weight"])
    assert_agrees(model.weight.detach(), before - 0.5 * gradients["weight"], name="theta - beta * grad")
    # Meta-training on a fixed meta-batch lowers its meta-loss. The meta-loss is quadratic in theta here with
    # curvature ~ 2/n |x|^2 ~ 10 for these inputs; lr = 0.01 keeps plain gradient descent stable far beyond that.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    start, _ = maml_step(model, tasks, inner_lr=0.1)
    for _ in range(20):
        later, _ = maml_step(model, tasks, inner_lr=0.1, optimizer=optimizer)
    assert later < start


def test_adapt_is_plain_sgd_on_the_support_set(seed):
    model = _linear(seed, 4, torch.float64)
    sx, sy, _, _ = _tasks(seed, 1, 4, 8, 2)[0]
    params = {n: p.detach() for n, p in model.named_parameters()}
    adapted = adapt(model, params, sx, sy, inner_lr=0.2, inner_steps=1)
    residual = model(sx).detach() - sy  # (8, 1)
    expected_weight = model.weight.detach() - 0.2 * 2 / 8 * residual.T @ sx
    assert_agrees(adapted["weight"], expected_weight, name="one SGD step")


def test_bad_inputs_raise_naming_the_argument():
    model = nn.Linear(2, 1)
    task = Task(torch.randn(3, 2), torch.randn(3, 1), torch.randn(4, 2), torch.randn(4, 1))
    cases = [
        (lambda: maml_step(model, [task], inner_lr=0), ValueError, "inner_lr must be"),
        (lambda: maml_step(model, [task], inner_lr=0.1, inner_steps=0), ValueError, "inner_steps must be"),
        (lambda: maml_step(model, [], inner_lr=0.1), ValueError, "tasks must be a non-empty"),
        (lambda: maml_step(model, [task[:3]], inner_lr=0.1), TypeError, "tasks\\[0\\] must be a Task"),
        (lambda: maml_step(model, [task._replace(query_y=torch.randn(3, 1))], inner_lr=0.1), ValueError,
         "query_x and query_y must hold the same"),
        (lambda: maml_step(lambda x: x, [task], inner_lr=0.1), TypeError, "model must be a torch.nn.Module"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        maml_step(model, [task], inner_lr=0.1)
