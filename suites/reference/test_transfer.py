"""reference/transfer.py: frozen parameters get no gradient and never move; the head trains.

Checked with SGD (momentum, weight decay) and AdamW (decoupled weight decay), including the case that
catches naive freezing: an optimizer built before freezing, whose momentum buffers and weight decay
would keep moving a parameter that still holds a (zeroed) gradient.
"""

import copy

import pytest
import torch
from torch import nn

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.transfer import finetune_optimizer, freeze, matching_parameters, trainable_parameters, unfreeze


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 12), nn.LayerNorm(12), nn.GELU(), nn.Linear(12, 12))
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


def _setup(seed):
    torch.manual_seed(seed)
    model = _Net().double()
    x = random_tensor((10, 6), seed=seed, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(seed))
    return model, x, y


def _train(model, optimizer, x, y, steps=4):
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=False)  # zeros, not None: the harder case for frozen parameters
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_glob_and_regex_select_the_same_parameters():
    model = _Net()
    backbone = [n for n, _ in model.named_parameters() if n.startswith("backbone.")]
    assert matching_parameters(model, "backbone.*") == backbone
    assert matching_parameters(model, r"backbone\..*", regex=True) == backbone
    assert matching_parameters(model, ["*.bias"]) == ["backbone.0.bias", "backbone.1.bias", "backbone.3.bias",
                                                     "head.bias"]
    assert matching_parameters(model, [r"backbone\.[03]\.weight", r"head\..*"], regex=True) == [
        "backbone.0.weight", "backbone.3.weight", "head.weight", "head.bias"]


@pytest.mark.parametrize("optimizer_kind", ["sgd-momentum-decay", "adamw"])
def test_frozen_backbone_never_moves_and_the_head_does(seed, optimizer_kind):
    model, x, y = _setup(seed)
    frozen = freeze(model, "backbone.*")
    assert frozen == sorted(n for n, _ in model.named_parameters() if n.startswith("backbone."))
    assert [n for n, _ in trainable_parameters(model)] == ["head.weight", "head.bias"]
    if optimizer_kind == "adamw":
        optimizer = finetune_optimizer(model, lr=0.1, weight_decay=0.5)
    else:
        optimizer = finetune_optimizer(model, lr=0.1, weight_decay=0.5, optimizer=torch.optim.SGD, momentum=0.9)
    before = _snapshot(model)
    _train(model, optimizer, x, y)
    for name, p in model.named_parameters():
        if name in frozen:
            assert p.grad is None, name
            assert torch.equal(p, before[name]), name
        else:
            assert not torch.equal(p, before[name]), name


def test_freezing_mid_training_stops_momentum_and_weight_decay(seed):
    model, x, y = _setup(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5)  # holds every parameter
    _train(model, optimizer, x, y, steps=3)  # momentum buffers now exist for the backbone too
    frozen = freeze(model, "backbone.*")
    before = _snapshot(model)
    _train(model, optimizer, x, y, steps=3)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if n in frozen)
    assert not torch.equal(model.head.weight, before["head.weight"])


def test_naive_freezing_lets_a_stale_zero_gradient_move_the_parameter(seed):
    # The failure freeze() guards against: requires_grad_(False) alone keeps the old gradient
    # tensor, zero_grad(set_to_none=False) zeroes it, and SGD's momentum and weight decay still apply.
    model, x, y = _setup(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5)
    _train(model, optimizer, x, y, steps=3)
    model.backbone.requires_grad_(False)
    before = model.backbone[0].weight.detach().clone()
    _train(model, optimizer, x, y, steps=1)
    assert not torch.equal(model.backbone[0].weight, before)


def test_head_gradient_is_unchanged_by_freezing_the_backbone(seed):
    model, x, y = _setup(seed)
    nn.functional.cross_entropy(model(x), y).backward()
    gold = model.head.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    freeze(model, "backbone.*")
    nn.functional.cross_entropy(model(x), y).backward()
    assert_agrees(model.head.weight.grad, gold, gradient=True, name="head gradient")
    assert all(p.grad is None for p in model.backbone.parameters())


def test_gradual_unfreezing(seed):
    model, x, y = _setup(seed)
    freeze(model, "*")
    unfreeze(model, "head.*")
    assert [n for n, _ in trainable_parameters(model)] == ["head.weight", "head.bias"]
    unfreeze(model, r"backbone\.3\..*", regex=True)  # the last backbone layer next
    assert [n for n, _ in trainable_parameters(model)] == ["backbone.3.weight", "backbone.3.bias", "head.weight",
                                                          "head.bias"]
    optimizer = finetune_optimizer(model, lr=0.05, weight_decay=0.1)
    decayed, undecayed = optimizer.param_groups
    assert [p.dim() for p in decayed["params"]] == [2, 2] and decayed["weight_decay"] == 0.1
    assert [p.dim() for p in undecayed["params"]] == [1, 1] and undecayed["weight_decay"] == 0.0
    before = _snapshot(model)
    _train(model, optimizer, x, y, steps=2)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"backbone.3.weight", "backbone.3.bias", "head.weight", "head.bias"}


def test_bad_inputs_raise_naming_the_argument():
    model = _Net()
    cases = [
        (lambda: freeze(model, "encoder.*"), ValueError, "patterns \\['encoder.\\*'\\] match no parameter"),
        (lambda: freeze(model, ["head.*", "haed.*"]), ValueError, "\\['haed.\\*'\\] match no parameter"),
        (lambda: freeze(model, "backbone.(", regex=True), ValueError, "not a valid regular expression"),
        (lambda: freeze(model, []), TypeError, "patterns must be a non-empty"),
        (lambda: freeze(model, [3]), TypeError, "patterns must be a non-empty"),
        (lambda: freeze(model.state_dict(), "*"), TypeError, "model must be a torch.nn.Module"),
        (lambda: finetune_optimizer(model, lr=0), ValueError, "lr must be a positive"),
        (lambda: finetune_optimizer(model, lr=0.1, weight_decay=-1), ValueError, "weight_decay must be"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    freeze(model, "*")
    with pytest.raises(ValueError, match="no trainable parameter"):
        finetune_optimizer(model, lr=0.1)


# --------------------------------------------------------------------------------------------------
# BatchNorm: the seed's example, a pre-trained ResNet with a new classifier head
# --------------------------------------------------------------------------------------------------


class _ResNetClassifier(nn.Module):
    """transformers.ResNetModel (tiny config: 6 BatchNorm layers, 18 running-statistic buffers) + a new head."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        import transformers

        config = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1],
                                           layer_type="basic", hidden_act="relu")
        self.backbone = transformers.ResNetModel(config)
        self.head = nn.Linear(12, num_classes)

    def forward(self, pixels):
        return self.head(self.backbone(pixel_values=pixels).pooler_output.flatten(1))


def _resnet_classifier(seed):
    torch.manual_seed(seed)
    model = _ResNetClassifier().double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # "pre-trained" statistics, away from the initial mean 0 / var 1
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(0.5 * torch.randn(c, generator=generator, dtype=torch.float64))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator, dtype=torch.float64))
    pixels = random_tensor((4, 3, 23, 19), seed=seed, dtype=torch.float64)
    labels = torch.randint(0, 3, (4,), generator=generator)
    return model, pixels, labels


def _running_statistics(model):
    return {n: b.clone() for n, b in model.named_buffers() if "running" in n or "num_batches" in n}


def test_frozen_resnet_keeps_its_batchnorm_statistics_through_a_training_step(seed):
    model, pixels, labels = _resnet_classifier(seed)
    statistics = _running_statistics(model)
    assert len(statistics) == 18  # 6 BatchNorm layers x (running_mean, running_var, num_batches_tracked)
    gold_model = copy.deepcopy(model).eval()  # the pre-trained network as it was: running statistics
    freeze(model, "backbone.*")
    model.train()  # what a training loop does first; the frozen norm layers must stay in eval mode
    assert model.training and model.head.training
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))

    optimizer = finetune_optimizer(model, lr=0.1, optimizer=torch.optim.SGD, momentum=0.9)
    low = copy.deepcopy(model).float()
    logits = model(pixels)
    nn.functional.cross_entropy(logits, labels).backward()
    optimizer.step()
    for name, before in statistics.items():  # bit for bit: nothing may update a frozen statistic
        assert torch.equal(dict(model.named_buffers())[name], before), f"{name} moved"

    # The frozen model in train mode computes what the pre-trained one computes in eval mode: the float64
    # eval-mode network is gold, the frozen float32 one (train mode) the candidate, forward and head gradient.
    gold_logits = gold_model(pixels)
    gold_grad, = torch.autograd.grad(nn.functional.cross_entropy(gold_logits, labels), gold_model.head.weight)
    low_logits = low(pixels.float())
    low_grad, = torch.autograd.grad(nn.functional.cross_entropy(low_logits, labels), low.head.weight)
    assert_agrees(low_logits.detach(), gold_logits.detach(), name="frozen ResNet logits in train mode")
    assert_agrees(low_grad, gold_grad, gradient=True, name="head gradient")


def test_unfreezing_releases_batchnorm_into_the_models_mode(seed):
    model, pixels, labels = _resnet_classifier(seed)
    freeze(model, "backbone.*")
    unfreeze(model, "backbone.encoder.*")  # the stages train again, the stem stays frozen
    model.train()
    norms = {n: m.training for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert norms == {n: not n.startswith("backbone.embedder") for n in norms}
    statistics = _running_statistics(model)
    model(pixels)
    moved = {n for n, b in model.named_buffers() if n in statistics and not torch.equal(b, statistics[n])}
    assert moved == {n for n in statistics if n.startswith("backbone.encoder")}
    model.eval()  # and eval mode still reaches every norm layer
    assert not any(m.training for m in model.modules())


def test_a_norm_layer_without_parameters_follows_its_statistics_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, affine=False), nn.Linear(4, 2))
    freeze(model, "*")  # "*" matches 1.running_mean too, so the parameter-less norm layer is frozen
    model.train()
    assert not model[1].training and model[2].training
    unfreeze(model, "2.*")  # does not name layer 1: it stays frozen
    model.train()
    assert not model[1].training
    unfreeze(model, "*")
    assert model[1].training
