"""reference/fewshot.py: prototypical networks and the episode sampler.

* a 2-way 2-shot episode computed by hand;
* the episode from library primitives, PyG's scatter mean and torch.cdist (values and gradients through
  an MLP encoder); no prototypical-network library installs beside the CPU torch (they import torchvision);
* Snell et al.'s remark that the squared-distance classifier is a linear one: softmax of
  ``2 c_k . f(x) - |c_k|^2`` equals softmax of ``-|f(x) - c_k|^2``;
* episodes: right shapes, N distinct classes, disjoint support and query, labels consistent.
"""

import math

import pytest
import torch
from torch import nn
from torch_geometric.utils import scatter

from fusebench.agreement import assert_agrees
from fusebench.inputs import random_tensor
from reference.fewshot import PrototypicalNetwork, class_prototypes, sample_episode

DTYPES = [torch.float64, torch.float32]


def test_hand_computed_two_way_two_shot_episode():
    # Identity encoder, D = 2. Class 0 support (1, 2), (3, 2) -> prototype (2, 2);
    # class 1 support (-1, -1), (-3, 1) -> prototype (-2, 0).
    # Query (2, 3):  |(0, 1)|^2 = 1,  |(4, 3)|^2 = 25  -> logits (-1, -25)
    # Query (-1, 0): |(-3, -2)|^2 = 13, |(1, 0)|^2 = 1  -> logits (-13, -1)
    # Labels (0, 1): losses log(1 + e^-24) and log(1 + e^-12), averaged.
    support = torch.tensor([[1.0, 2.0], [3.0, 2.0], [-1.0, -1.0], [-3.0, 1.0]], dtype=torch.float64)
    support_labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[2.0, 3.0], [-1.0, 0.0]], dtype=torch.float64)
    net = PrototypicalNetwork(nn.Identity())
    expected_prototypes = torch.tensor([[2.0, 2.0], [-2.0, 0.0]], dtype=torch.float64)
    assert_agrees(class_prototypes(support, support_labels, 2), expected_prototypes, name="prototypes")
    expected_logits = torch.tensor([[-1.0, -25.0], [-13.0, -1.0]], dtype=torch.float64)
    assert_agrees(net(support, support_labels, query, 2), expected_logits, name="logits")
    expected_loss = (math.log1p(math.exp(-24)) + math.log1p(math.exp(-12))) / 2
    loss = net.loss(support, support_labels, query, torch.tensor([0, 1]), 2)
    assert_agrees(loss, torch.tensor(expected_loss, dtype=torch.float64), name="loss")


def _library_logits(encoder, support, support_labels, query, n_way):
    """The episode from library primitives: prototypes by PyG's scatter mean, distances by torch.cdist.

    No prototypical-network library installs here (easyfsl and learn2learn import torchvision, which does not
    import beside the CPU torch), so the two operations the method is made of come from libraries instead.
    """
    prototypes = scatter(encoder(support), support_labels, dim=0, dim_size=n_way, reduce="mean")  # (N, D)
    return -torch.cdist(encoder(query), prototypes).square()  # (Q, N)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_way, k_shot, n_query", [(2, 1, 1), (5, 3, 2), (3, 5, 4)])
def test_logits_and_gradients_match_library_primitives(seed, dtype, n_way, k_shot, n_query):
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 5)).double()
    net = PrototypicalNetwork(encoder)
    support = random_tensor((n_way * k_shot, 6), seed=seed, dtype=torch.float64)
    support_labels = torch.arange(n_way).repeat(k_shot)  # interleaved classes: not grouped
    query = random_tensor((n_way * n_query, 6), seed=seed + 1, dtype=torch.float64)
    query_labels = torch.arange(n_way).repeat_interleave(n_query)

    def loss_and_grad(model, compute):
        model.zero_grad()
        loss = compute(model)
        loss.backward()
        return loss.detach(), model.encoder[0].weight.grad.clone()

    gold, grad_gold = loss_and_grad(net, lambda m: m.loss(support, support_labels, query, query_labels, n_way))
    low = net.to(dtype)
    baseline, grad_baseline = loss_and_grad(low, lambda m: m.loss(support.to(dtype), support_labels, query.to(dtype),
                                                                  query_labels, n_way))
    candidate, grad_candidate = loss_and_grad(low, lambda m: nn.functional.cross_entropy(
        _library_logits(m.encoder, support.to(dtype), support_labels, query.to(dtype), n_way), query_labels))
    assert_agrees(candidate, gold, baseline, name="episode loss")
    assert_agrees(grad_candidate, grad_gold, grad_baseline, gradient=True, name="d loss / d encoder weight")


def test_distance_classifier_is_a_linear_classifier(seed):
    # -|f - c_k|^2 = 2 c_k . f - |c_k|^2 - |f|^2; the last term is the same for every class.
    support = random_tensor((12, 7), seed=seed, dtype=torch.float64)
    labels = torch.arange(4).repeat_interleave(3)
    query = random_tensor((5, 7), seed=seed + 1, dtype=torch.float64)
    prototypes = class_prototypes(support, labels, 4)
    linear = 2 * query @ prototypes.T - prototypes.square().sum(-1)
    logits = PrototypicalNetwork(nn.Identity())(support, labels, query, 4)
    assert_agrees(torch.softmax(linear, -1), torch.softmax(logits, -1), name="softmax of the linear form")


@pytest.mark.parametrize("n_way, k_shot, n_query", [(2, 1, 1), (5, 3, 4), (7, 2, 3)])
def test_episode_sampler_draws_disjoint_sets_with_the_right_classes(seed, n_way, k_shot, n_query):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 11, (400,), generator=generator) * 3 + 5  # class ids 5, 8, ..., 35: not 0..C-1
    labels[:4] = 99  # a class too small to be drawn (4 < k_shot + n_query for the larger cases)
    episode = sample_episode(labels, n_way, k_shot, n_query, generator=generator)
    assert episode.classes.shape == (n_way,) and episode.classes.unique().numel() == n_way
    assert episode.support_indices.shape == (n_way * k_shot,) and episode.query_indices.shape == (n_way * n_query,)
    assert set(episode.support_indices.tolist()).isdisjoint(episode.query_indices.tolist())
    assert episode.support_indices.unique().numel() == n_way * k_shot
    assert episode.query_indices.unique().numel() == n_way * n_query
    assert torch.equal(labels[episode.support_indices], episode.classes[episode.support_labels])
    assert torch.equal(labels[episode.query_indices], episode.classes[episode.query_labels])
    assert torch.equal(episode.support_labels.bincount(), torch.full((n_way,), k_shot))
    if k_shot + n_query > 4:
        assert 99 not in episode.classes.tolist()
    again = sample_episode(labels, n_way, k_shot, n_query, generator=torch.Generator().manual_seed(seed))
    first = sample_episode(labels, n_way, k_shot, n_query, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(again.support_indices, first.support_indices)  # reproducible from the generator


def test_sampled_episode_trains_end_to_end(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(6).repeat_interleave(8)
    # Six clusters centred at 4 e_k, noise sigma 0.3: centres 5.7 apart, a query would need noise of
    # ~9 sigma along the line between two centres to land nearer the wrong prototype.
    data = 4 * torch.eye(6, dtype=torch.float64)[labels] + random_tensor((48, 6), seed=seed, dtype=torch.float64,
                                                                         scale=0.3)
    episode = sample_episode(labels, 3, 2, 4, generator=generator)
    net = PrototypicalNetwork(nn.Identity())
    logits = net(data[episode.support_indices], episode.support_labels, data[episode.query_indices], 3)
    assert torch.equal(logits.argmax(-1), episode.query_labels)


def test_bad_inputs_raise_naming_the_argument():
    labels = torch.arange(5).repeat_interleave(4)
    support, query = torch.randn(4, 3), torch.randn(2, 3)
    net = PrototypicalNetwork(nn.Identity())
    cases = [
        (lambda: sample_episode(labels.float(), 2, 1, 1), ValueError, "labels must be a 1-D integer"),
        (lambda: sample_episode(labels, 1, 1, 1), ValueError, "n_way must be at least 2"),
        (lambda: sample_episode(labels, 2, 0, 1), ValueError, "k_shot must be a positive integer"),
        (lambda: sample_episode(labels, 2, 1, 2.0), ValueError, "n_query must be a positive integer"),
        (lambda: sample_episode(labels, 6, 1, 1), ValueError, "n_way=6 needs 6"),
        (lambda: sample_episode(labels, 2, 3, 2), ValueError, "only 0 classes with at least k_shot \\+ n_query = 5"),
        (lambda: net(support, torch.tensor([0, 0, 2, 2]), query, 2), ValueError, "every class 0 .. 1"),
        (lambda: net(support, torch.tensor([0, 0, 1]), query, 2), ValueError, "support_labels must be an integer"),
        (lambda: net(support, torch.tensor([0, 0, 1, 1]), torch.randn(2, 5), 2), ValueError,
         "encoder\\(query\\) must have shape"),
        (lambda: net.loss(support, torch.tensor([0, 0, 1, 1]), query, torch.tensor([0]), 2), ValueError,
         "query_labels must have shape"),
        (lambda: PrototypicalNetwork(lambda x: x), TypeError, "encoder must be a torch.nn.Module"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
