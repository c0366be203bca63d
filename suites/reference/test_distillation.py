"""reference/distillation.py against torch.nn.functional and closed forms.

* the soft term against ``F.kl_div(..., log_target=True, reduction="batchmean")`` and the whole loss
  against ``F.kl_div`` + ``F.cross_entropy`` put together here, values and gradients;
* the T^2 scaling: d(T^2 KL)/ds = T (softmax(s/T) - softmax(t/T)) / B exactly, and Hinton's
  high-temperature limit (s - t) / (C B) for zero-mean logits;
* equal logits give zero KL; no gradient reaches the teacher; a frozen teacher never moves.
"""

import pytest
import torch
import torch.nn.functional as F

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.distillation import DistillationModel, distillation_loss, soft_target_kl

DTYPES = [torch.float64, torch.float32]


def _logits(seed, b=6, c=10, scale=3.0):
    return (random_tensor((b, c), seed=seed, dtype=torch.float64, scale=scale),
            random_tensor((b, c), seed=seed + 1, dtype=torch.float64, scale=scale),
            torch.randint(0, c, (b,), generator=torch.Generator().manual_seed(seed)))


def _torch_loss(s, t, labels, temperature, alpha):
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, labels)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (4.0, 0.9), (20.0, 1.0), (2.5, 0.0)])
def test_loss_and_gradient_match_torch_kl_div_and_cross_entropy(seed, dtype, temperature, alpha):
    s, t, labels = _logits(seed, b=7, c=13)  # 13 classes: no power of two
    s.requires_grad_()
    gold = distillation_loss(s, t, labels, temperature=temperature, alpha=alpha)
    grad_gold, = torch.autograd.grad(gold, s)
    s_low = s.detach().to(dtype).requires_grad_()
    baseline = distillation_loss(s_low, t.to(dtype), labels, temperature=temperature, alpha=alpha)
    grad_baseline, = torch.autograd.grad(baseline, s_low)
    s_torch = s.detach().to(dtype).requires_grad_()
    candidate = _torch_loss(s_torch, t.to(dtype), labels, temperature, alpha)
    grad_candidate, = torch.autograd.grad(candidate, s_torch)
    assert_agrees(candidate, gold, baseline, name="loss")
    assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name="d loss / d student")
    kl_torch = F.kl_div(F.log_softmax(s_torch / temperature, -1), F.log_softmax(t.to(dtype) / temperature, -1),
                        log_target=True, reduction="batchmean")
    assert_agrees(kl_torch.detach(), soft_target_kl(s.detach(), t, temperature),
                  soft_target_kl(s_low.detach(), t.to(dtype), temperature), name="KL term")


def test_equal_logits_give_zero_kl_and_kl_is_positive_otherwise(seed):
    s, t, labels = _logits(seed)
    assert soft_target_kl(s, s.clone(), 3.0) == 0  # p * (log p - log p) is exactly zero
    assert distillation_loss(s, s.clone(), labels, temperature=3.0, alpha=1.0) == 0
    assert soft_target_kl(s, t, 3.0) > 0  # Gibbs' inequality, strict for different distributions


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 30.0])
def test_soft_gradient_is_t_times_probability_difference(seed, temperature):
    # d/ds [T^2 * KL(p_t || softmax(s/T))] = T^2 * (p_s - p_t) / (T * B) = T * (p_s - p_t) / B.
    s, t, labels = _logits(seed, b=5, c=9)
    s.requires_grad_()
    soft = distillation_loss(s, t, labels, temperature=temperature, alpha=1.0)
    grad, = torch.autograd.grad(soft, s)
    closed_form = temperature * (torch.softmax(s.detach() / temperature, -1) - torch.softmax(t / temperature, -1)) / 5
    assert_agrees(grad, closed_form, gradient=True, name=f"T^2 gradient at T={temperature}")


def test_high_temperature_gradient_tends_to_logit_matching(seed):
    # Hinton eq. (4): with zero-mean logits, T (p_s - p_t) -> (s - t) / C as T -> infinity; the
    # remainder is O(|logits|^2 / T), so the error must fall roughly tenfold per tenfold T.
    s, t, labels = _logits(seed, b=4, c=8)
    s, t = s - s.mean(-1, keepdim=True), t - t.mean(-1, keepdim=True)
    limit = (s - t) / (8 * 4)
    errors = []
    for temperature in (10.0, 100.0, 1000.0):
        s_var = s.clone().requires_grad_()
        grad, = torch.autograd.grad(distillation_loss(s_var, t, labels, temperature=temperature, alpha=1.0), s_var)
        errors.append(float((grad - limit).abs().max()))
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5, errors
    assert errors[2] < 1e-2 * float(limit.abs().max())


def test_no_gradient_reaches_the_teacher_logits(seed):
    s, t, labels = _logits(seed)
    s.requires_grad_()
    t.requires_grad_()
    distillation_loss(s, t, labels, temperature=2.0, alpha=0.7).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_distillation_model_keeps_the_teacher_frozen(seed):
    torch.manual_seed(seed)
    teacher = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.5), torch.nn.ReLU(),
                                  torch.nn.Linear(16, 4)).double()
    student = torch.nn.Linear(6, 4).double()
    model = DistillationModel(student, teacher, temperature=3.0, alpha=0.8).train()
    assert not teacher.training  # dropout off in the teacher even while training the student
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = student.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    x = random_tensor((8, 6), seed=seed, dtype=torch.float64)
    labels = torch.randint(0, 4, (8,), generator=torch.Generator().manual_seed(seed))
    for _ in range(3):
        optimizer.zero_grad()
        loss, logits = model(x, labels)
        loss.backward()
        optimizer.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not torch.equal(student.weight, student_before)
    assert_agrees(loss, distillation_loss(logits, teacher(x), labels, temperature=3.0, alpha=0.8), name="forward")


def test_bad_inputs_raise_naming_the_argument():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([0, 1, 2, 3])
    cases = [
        (lambda: distillation_loss(s, t[:, :4], labels), ValueError, "must have the same shape"),
        (lambda: distillation_loss(s[0], t[0], labels), ValueError, "student_logits must have shape \\(B, C\\)"),
        (lambda: distillation_loss(s, t, labels.float()), TypeError, "labels must be an integer tensor"),
        (lambda: distillation_loss(s, t, labels[:3]), ValueError, "labels must have shape"),
        (lambda: distillation_loss(s, t, labels + 2), ValueError, "labels must lie in \\[0, 5\\)"),
        (lambda: distillation_loss(s, t, labels, temperature=0), ValueError, "temperature must be"),
        (lambda: distillation_loss(s, t, labels, alpha=1.5), ValueError, "alpha must be"),
        (lambda: distillation_loss(s, t.long(), labels), TypeError, "teacher_logits must be a floating-point"),
        (lambda: DistillationModel(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), temperature=-1), ValueError,
         "temperature must be"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    net = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="student and teacher must be different"):
        DistillationModel(net, net)
