"""The diagnostic metrics against hand-computed values (dormant fractions, ranks, norms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from crl import diagnostics as D


def test_half_dead_layer_has_dormant_fraction_half():
    rng = np.random.default_rng(0)
    h = np.abs(rng.normal(size=(256, 8))) + 0.1
    h[:, ::2] = 0.0
    assert D.tau_dormant_fraction(h, tau=0.0) == 0.5
    assert D.active_fraction(h) == 0.5
    rec = D.DormantRecord(8, window=1000)
    rec.update(h)
    assert rec.dormant_fraction() == 0.5


def test_tau_dormant_score_is_normalised_by_layer_mean():
    # mean|h| per unit = [1, 1, 1, 5]; layer mean 2; scores [0.5, 0.5, 0.5, 2.5]
    h = np.array([[1.0, -1.0, 1.0, 5.0], [1.0, 1.0, -1.0, 5.0]])
    assert D.tau_dormant_fraction(h, tau=0.5) == 0.75
    assert D.tau_dormant_fraction(h, tau=0.49) == 0.0


def test_dohare_record_uses_last_window_steps_only():
    rec = D.DormantRecord(2, window=100, threshold=0.01)
    rec.update(np.tile([[1.0, 1.0]], (100, 1)))  # both active
    assert rec.dormant_fraction() == 0.0
    rec.update(np.tile([[1.0, 0.0]], (99, 1)))  # unit 1 active in 1 of the last 100 steps: dormant
    assert rec.dormant_fraction() == 0.5
    s = rec.state()
    rec2 = D.DormantRecord(2, window=100)
    rec2.load(s)
    assert rec2.dormant_fraction() == 0.5


def test_ranks_of_constructed_matrices():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(256, 2)) @ rng.normal(size=(2, 32))
    assert D.srank(h) == 2
    # singular values 3, 1: srank with delta 0.01 needs both (3/4 < 0.99)
    h2 = np.diag([3.0, 1.0])
    assert D.srank(h2) == 2
    assert D.srank(np.diag([100.0, 0.5])) == 1  # 100/100.5 >= 0.99
    p = np.array([0.75, 0.25])
    assert D.effective_rank(h2) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert D.stable_rank(h2) == pytest.approx(10.0 / 9.0)
    assert D.effective_rank(np.eye(5)) == pytest.approx(5.0)


def test_norms_and_distances():
    assert D.feature_norm(np.array([[3.0, 4.0], [6.0, 8.0]])) == 7.5
    assert D.mean_abs_weight([torch.tensor([[1.0, -2.0], [3.0, -4.0]])]) == 2.5
    assert D.param_distance([torch.zeros(2), torch.zeros(1)], [torch.tensor([1.0, 2.0]), torch.tensor([2.0])]) == 3.0
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([2.0, 3.0, 6.0])
    assert D.grad_norm([p]) == 7.0
