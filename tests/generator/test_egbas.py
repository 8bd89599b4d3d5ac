"""Known answers for E-GBAS on the first DCGAN block (affine in z with eval-mode BatchNorm)."""

import torch
import torch.nn.functional as F

from xai_train.generator.egbas import (
    affine_edge_distance,
    affine_map,
    edge_distance,
    explore,
    inside,
    region_constraints,
    supporting_set,
)

PRE, ACT = "project.norm", "project.act"


def test_bisection_edge_equals_the_closed_form_polytope_edge(trained_gan):
    G = trained_gan[0]
    query = torch.randn(100, generator=torch.Generator().manual_seed(0))
    support = torch.rand(32, generator=torch.Generator().manual_seed(1)) > 0.5
    neurons, signs = region_constraints(G, PRE, query, support)
    jacobian, offset = affine_map(G, PRE, 100)
    directions = F.normalize(torch.randn(16, 100, generator=torch.Generator().manual_seed(2)), dim=1)
    start = query.expand(16, -1)
    bisected = edge_distance(lambda z: inside(G, PRE, z, neurons, signs), start, directions, radius=5.0)
    exact = affine_edge_distance(jacobian, offset, start, directions, neurons, signs, radius=5.0)
    assert (exact < 5.0).all()  # the edges lie inside the search radius, so the test is not vacuous
    torch.testing.assert_close(bisected, exact, atol=1e-4, rtol=0)


def test_every_accepted_sample_keeps_the_sign_pattern_and_beats_the_eps_ball(trained_gan):
    G = trained_gan[0]
    query = torch.randn(100, generator=torch.Generator().manual_seed(3))
    support = torch.ones(32, dtype=torch.bool)  # the full pattern: the smallest region, the hardest case
    neurons, signs = region_constraints(G, PRE, query, support)
    result = explore(G, PRE, query, neurons, signs, num_samples=24, radius=3.0)
    assert len(result.tree) == 25 and torch.equal(result.tree[0], query)
    assert inside(G, PRE, result.tree, neurons, signs).all()  # 100% acceptance
    assert (result.parents[1:] < torch.arange(1, 25)).all()  # a tree: parents come first
    assert result.baseline_inside.float().mean() < 1.0  # matched-distance ε-samples leave the region


def test_the_planted_unit_supports_exactly_the_queries_that_show_the_blob(planted):
    G, unit, u = planted.generator, planted.units[ACT], planted.direction
    queries = torch.randn(6, 100, generator=torch.Generator().manual_seed(5))
    along = torch.tensor([1.0, 1.5, 2.5, -2.0, -0.5, -1.0]) + planted.offset  # u·z: 3 blobs, 3 silent
    queries += (along - queries @ u)[:, None] * u
    shows = planted.shows_blob(queries)
    assert shows.tolist() == [True, True, True, False, False, False]
    for query, blob in zip(queries, shows, strict=True):
        support = supporting_set(G, ACT, query, steps=80, mask_samples=4)
        assert bool(support[unit]) == bool(blob)
