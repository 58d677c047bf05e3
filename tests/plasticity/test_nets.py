"""The one MLP walker (crl.plasticity.nets): activations, LayerNorm, CReLU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crl.plasticity.nets import ACTIVATIONS, CReLU, activation_name, find_mlps, hidden_layers, is_activation


def test_every_activation_the_catalog_uses_is_known():
    from crl.catalog import agent_specs

    used = {spec.network.activation for spec in agent_specs().values()}
    assert {"relu", "crelu"} <= used and used <= set(ACTIVATIONS)
    assert {"relu", "tanh", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "crelu"} <= set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_each_activation_makes_a_hidden_layer(name):
    act = ACTIVATIONS[name]()
    assert is_activation(act) and activation_name(act) == name
    width_out = 8 if name in ("crelu", "dff") else 4
    net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), act, nn.Linear(width_out, 1))
    (layer,) = hidden_layers(net)
    assert (layer.inp, layer.norm, layer.act, layer.outs, layer.path) == (net[0], net[1], act, [net[3]], "0")
    assert layer.doubled == (name in ("crelu", "dff"))


def test_subclasses_are_activations_without_a_name():
    class Shifted(nn.ReLU):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 1.0

    assert is_activation(Shifted()) and activation_name(Shifted()) is None
    assert activation_name(nn.Linear(1, 1)) is None and not is_activation(nn.LayerNorm(2))


def test_crelu_units_add_both_halves():
    net = nn.Sequential(nn.Linear(2, 3), CReLU(), nn.Linear(6, 1))
    (layer,) = hidden_layers(net)
    x = torch.randn(5, 2)
    h = net[1](net[0](x))
    assert h.shape == (5, 6) and layer.width == 3
    torch.testing.assert_close(layer.units(h), net[0](x).abs())
    torch.testing.assert_close(layer.unit_activity(h), net[0](x).abs())
    torch.testing.assert_close(layer.out_columns(torch.tensor([1])), torch.tensor([1, 4]))


def test_nested_modules_get_their_paths_and_find_mlps_agrees():
    inner = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.ELU())
    net = nn.Sequential(nn.Flatten(), inner, nn.Linear(4, 2))
    assert [layer.path for layer in hidden_layers(net)] == ["1.0", "1.2"]
    (view,) = find_mlps(net, torch.optim.SGD(net.parameters(), lr=0.1))
    assert [layer.inp for layer in view.layers] == [inner[0], inner[2]] and view.output == [net[2]]
    assert view.layers[-1].outs == [net[2]]
