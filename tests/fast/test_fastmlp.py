"""crl.fast.mlp: hand-written forward and backward passes equal autograd's (up to float rounding)."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from crl.fast import mlp as fastmlp
from crl.fast.gaussian import gaussian_terms, hand_actor_step
from crl.fast.mlp import MlpPlan, onednn_linear_available
from crl.fast.ppo import FastPPO
from crl.fast.update import actor_plan


def _net(widths, act, out, bias=True):
    torch.manual_seed(0)
    layers, last = [], widths[0]
    for w in widths[1:]:
        layers += [nn.Linear(last, w), act()]
        last = w
    return nn.Sequential(*layers), nn.Linear(last, out, bias=bias)


def _autograd(body, head, x, grad_out):
    params = [*body.parameters(), *head.parameters()]
    for p in params:
        p.grad = None
    out = head(body(x))
    out.backward(grad_out)
    return out.detach(), [p.grad.clone() for p in params]


@pytest.fixture(params=["onednn", "torch"])
def kernels(request, monkeypatch):
    """Both kernel choices: oneDNN's (where this torch has it) and torch's own ``addmm``."""
    if request.param == "onednn" and not onednn_linear_available():
        pytest.skip("no oneDNN linear in this torch build")
    monkeypatch.setattr(fastmlp, "onednn_linear_preferred", lambda: request.param == "onednn")
    return request.param


@pytest.mark.parametrize(
    "widths,act,rows,bias",
    [
        ([27, 256, 256], nn.ReLU, 128, True),  # Dohare's Ant nets
        ([3, 64, 64], nn.Tanh, 64, True),  # SB3's default
        ([5, 16], nn.ReLU, 1, False),  # one row, a head without bias
        ([4], nn.ReLU, 7, True),  # no hidden layer (net_arch [])
    ],
)
def test_forward_and_gradients_equal_autograd(kernels, widths, act, rows, bias):
    body, head = _net(widths, act, 8, bias)
    x, grad_out = torch.randn(rows, widths[0]), torch.randn(rows, 8)
    want_out, want_grads = _autograd(body, head, x, grad_out)
    plan = MlpPlan.of(body, head)
    assert plan is not None
    out, saved = plan.forward(x)
    torch.testing.assert_close(out, want_out, rtol=1e-5, atol=1e-6)
    got = plan.param_grads(saved, grad_out)
    assert [g.shape for g in got] == [g.shape for g in want_grads]
    for g, w in zip(got, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    # backward() adds to existing gradients, as autograd does
    plan.backward(saved, grad_out)
    for p, w in zip(plan.params, want_grads, strict=True):
        torch.testing.assert_close(p.grad, 2 * w, rtol=1e-5, atol=1e-6)


def test_relu_gradient_is_zero_where_the_unit_is_off():
    body, head = nn.Sequential(nn.Linear(1, 2), nn.ReLU()), nn.Linear(2, 1)
    with torch.no_grad():
        body[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        body[0].bias.zero_()
        head.weight.copy_(torch.tensor([[2.0, 3.0]]))
    plan = MlpPlan.of(body, head)
    _, saved = plan.forward(torch.tensor([[2.0]]))  # unit 0 on (2), unit 1 off (0)
    w1, b1, w2, b2 = plan.param_grads(saved, torch.ones(1, 1))
    assert w1.tolist() == [[4.0], [0.0]] and b1.tolist() == [2.0, 0.0]
    assert w2.tolist() == [[2.0, 0.0]] and b2.tolist() == [1.0]


def test_unsupported_networks_are_left_to_autograd():
    body, head = _net([4, 8], nn.ReLU, 2)
    assert MlpPlan.unsupported(body, head) is None
    assert "LayerNorm" in MlpPlan.unsupported(nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU()), head)
    assert "ELU after a Linear" in MlpPlan.unsupported(nn.Sequential(nn.Linear(4, 8), nn.ELU()), head)
    assert "head" in MlpPlan.unsupported(body, nn.Sequential(head))
    assert "without an activation" in MlpPlan.unsupported(nn.Sequential(nn.Linear(4, 8)), head)

    class MyLinear(nn.Linear):
        pass

    assert "MyLinear" in MlpPlan.unsupported(nn.Sequential(MyLinear(4, 8), nn.ReLU()), head)
    h = body[0].register_forward_hook(lambda m, a, o: o * 2)
    assert "forward hooks" in MlpPlan.unsupported(body, head)
    h.remove()
    h = body[1].register_forward_hook(lambda m, a, o: None)  # not crl's feature capture
    assert "other than crl's feature capture" in MlpPlan.unsupported(body, head)
    h.remove()
    h = head.weight.register_hook(lambda g: g)
    assert "gradient hooks" in MlpPlan.unsupported(body, head)
    h.remove()
    h = nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    assert "global" in MlpPlan.unsupported(body, head)
    h.remove()
    body.double()
    assert "float32" in MlpPlan.unsupported(body, head)


def test_feature_capture_hooks_see_the_activations_and_changes_are_noticed():
    body, head = _net([4, 8, 8], nn.ReLU, 2)
    seen = {}

    def hook(module, args, out):
        if module.training and torch.is_grad_enabled():
            seen[module] = out.detach().clone()

    hook._crl_features = True
    for act in (body[1], body[3]):
        act.register_forward_hook(hook)
    plan = MlpPlan.of(body, head)  # crl's feature capture is allowed on activations
    assert plan is not None
    x = torch.randn(5, 4)
    plan.forward(x)
    torch.testing.assert_close(seen[body[1]], torch.relu(body[0](x)).detach())
    torch.testing.assert_close(seen[body[3]], body(x).detach())
    assert plan.matches(body, head)
    handle = body[0].register_forward_hook(lambda m, a, o: None)
    assert not plan.matches(body, head)  # a hook added after the plan was made
    handle.remove()
    assert plan.matches(body, head) and not plan.matches(nn.Sequential(*body), head)
    body[2] = nn.Linear(8, 8)  # a layer swapped inside the body
    assert not plan.matches(body, head)


def test_a_replaced_parameter_gets_the_gradient():
    body, head = _net([4, 8], nn.ReLU, 2)
    plan = MlpPlan.of(body, head)
    old = head.weight
    head.weight = nn.Parameter(old.detach() * 2)
    x, g = torch.randn(3, 4), torch.randn(3, 2)
    _, saved = plan.forward(x)
    plan.backward(saved, g)
    assert old.grad is None and head.weight.grad is not None
    _, want = _autograd(body, head, x, g)
    torch.testing.assert_close(plan.param_grads(saved, g)[2], want[2])


def _ppo_terms(policy, obs, acts, old, adv, clip, ent_coef):
    """The PPO actor loss with autograd, as FastPPO's autograd path computes it."""
    _, log_prob, entropy = gaussian_terms(policy, obs, acts, ent_coef != 0, critic=False)
    ratio = torch.exp(log_prob - old)
    policy_loss = -torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean()
    entropy_loss = -entropy.mean()
    (policy_loss + ent_coef * entropy_loss).backward()
    return policy_loss.detach(), entropy_loss.detach(), (log_prob - old).detach()


@pytest.mark.parametrize("ent_coef", [0.0, 0.01])
def test_hand_actor_step_equals_autograd(kernels, ent_coef):
    torch.manual_seed(0)
    pk = dict(net_arch=dict(pi=[256, 256], vf=[256, 256]), activation_fn=nn.ReLU, log_std_init=-0.5)
    policy = FastPPO("MlpPolicy", gym.make("Ant-v5"), n_steps=128, policy_kwargs=pk, seed=0).policy
    plan = actor_plan(policy)
    assert plan is not None
    obs, acts, adv = torch.randn(128, 105), torch.randn(128, 8), torch.randn(128)
    with torch.no_grad():
        _, log_prob, _ = gaussian_terms(policy, obs, acts, False, critic=False)
    old = log_prob + 0.3 * torch.randn(128)  # about half the ratios outside [0.8, 1.2], both signs
    ratio = torch.exp(log_prob - old)
    assert 0.2 < ((ratio - 1).abs() > 0.2).float().mean() < 0.8
    params = [*plan.params, policy.log_std]
    for p in params:
        p.grad = None
    got = hand_actor_step(plan, policy.log_std, obs, acts, old, adv, 0.2, ent_coef)
    got_grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    want = _ppo_terms(policy, obs, acts, old, adv, 0.2, ent_coef)
    for g, w in zip(got, want, strict=True):  # log-probabilities of ~-10: float32 steps of ~1e-6
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    for g, p in zip(got_grads, params, strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-7)
    assert got_grads[-1].abs().min() > 0  # log_std gets a gradient


def test_hand_actor_step_at_the_clip_bounds():
    """Ratios exactly at 1 +- clip pass the gradient (clamp's bounds are inclusive)."""
    body, head = nn.Sequential(), nn.Linear(1, 1, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    log_std = nn.Parameter(torch.zeros(1))
    plan = MlpPlan.of(body, head)
    obs, acts = torch.zeros(4, 1), torch.zeros(4, 1)
    log_prob = torch.full((4,), -math.log(math.sqrt(2 * math.pi)))  # N(0, 1) at 0
    ratios = torch.tensor([0.8, 1.2, 0.7, 1.3])  # at both bounds, then outside both
    old = log_prob - torch.log(ratios)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])  # the outside ones clipped (no gradient)
    for p in (*plan.params, log_std):
        p.grad = None
    hand_actor_step(plan, log_std, obs, acts, old, adv, 0.2, 0.0)
    hand = head.bias.grad.clone()
    # by autograd, on the same numbers
    head.bias.grad = None
    mean = head(obs)
    lp = (-((acts - mean) ** 2) / 2 - math.log(math.sqrt(2 * math.pi))).sum(1)
    r = torch.exp(lp - old)
    (-torch.min(adv * r, adv * torch.clamp(r, 0.8, 1.2)).mean()).backward()
    assert head.bias.grad.item() == 0.0 and hand.item() == 0.0  # mean at the action: d/dmean = 0
    # the ratio's gradient itself, through log_std (z2 - 1 = -1 per row): rows 0 and 1 only
    torch.testing.assert_close(log_std.grad, torch.tensor([-(0.8 * 1.0 + 1.2 * -1.0) / 4 * -1.0]))


def test_fastppo_hand_and_autograd_updates_agree(monkeypatch):
    """Whole updates of Dohare-sized nets, with and without hand-written gradients."""
    kw = dict(n_steps=256, batch_size=128, n_epochs=2, learning_rate=1e-4, seed=0, parallel_update=False)
    pk = dict(net_arch=dict(pi=[256, 256], vf=[256, 256]), activation_fn=nn.ReLU)
    params = {}
    for hand in (True, False):
        m = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), hand_gradients=hand, policy_kwargs=pk, **kw)
        m.learn(256)
        params[hand] = torch.cat([p.detach().flatten() for p in m.policy.parameters()])
    torch.testing.assert_close(params[True], params[False], rtol=1e-4, atol=1e-5)


def test_layer_norm_policies_train_with_autograd():
    from crl.agents import build_model
    from crl.catalog import resolve_agent

    spec = resolve_agent("ppo")
    spec.network.layer_norm = True
    spec.hyperparameters.update(n_steps=64, batch_size=32, n_epochs=1)
    model, _ = build_model(spec, gym.make("Pendulum-v1"), seed=0)
    assert actor_plan(model.policy) is None
    before = torch.cat([p.detach().flatten() for p in model.policy.parameters()])
    model.learn(64)
    after = torch.cat([p.detach().flatten() for p in model.policy.parameters()])
    assert not torch.equal(before, after) and np.isfinite(after.numpy()).all()


def test_continual_backprop_gets_the_same_features_by_hand():
    """CBP's feature capture (forward hooks on the activations) is fed by the hand-written
    forward pass as by a module call: the same utilities up to float rounding.
    """
    from crl.agents import build_model
    from crl.catalog import resolve_agent

    def run(hand):
        spec = resolve_agent("ppo-cbp")
        spec.hyperparameters.update(n_steps=256, batch_size=64, n_epochs=2)
        spec.network.pi, spec.network.vf = [24, 24], [24, 24]
        spec.interventions = [{"cbp": {"replacement_rate": 0.05, "maturity": 10**6, "decay": 0.9}}]
        torch.set_num_threads(1)
        model, iv = build_model(spec, gym.make("crl/SlipperyHopper-v0"), seed=1)
        model.hand_gradients, model.parallel_update = hand, False
        model.learn(512)
        (cbp,) = iv.interventions
        return torch.cat([p.detach().flatten() for p in model.policy.parameters()]), cbp

    (pa, cbp_a), (pb, cbp_b) = run(True), run(False)
    torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    assert sorted(cbp_a.util) == ["pi/0", "pi/1", "vf/0", "vf/1"]
    for key in cbp_a.util:
        assert cbp_a.util[key].abs().sum() > 0, key
        torch.testing.assert_close(cbp_a.util[key], cbp_b.util[key], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("vendor", ["AuthenticAMD", "GenuineIntel", "HygonGenuine", ""])
@pytest.mark.parametrize("capability", ["AVX512", "AVX2", "DEFAULT", "ZVECTOR"])
def test_onednn_is_preferred_only_with_avx512_kernels_off_intel(monkeypatch, capability, vendor):
    """The kernel choice follows the CPU (the same kernels in every run on a machine), never
    timing: oneDNN only where torch runs AVX-512 kernels, the vendor is known and not Intel (MKL
    runs its AVX-512 kernels on Intel CPUs only) and oneDNN checked out."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(fastmlp, "cpu_vendor", lambda: vendor)
    fastmlp.onednn_linear_preferred.cache_clear()
    try:
        want = capability == "AVX512" and vendor in ("AuthenticAMD", "HygonGenuine") and onednn_linear_available()
        assert fastmlp.onednn_linear_preferred() is want
    finally:
        fastmlp.onednn_linear_preferred.cache_clear()


def test_cpu_vendor_reads_this_machines_cpu():
    """On Linux the vendor is /proc/cpuinfo's ``vendor_id`` (x86); elsewhere a known CPUID
    vendor string or ""."""
    vendor = fastmlp.cpu_vendor()
    try:
        with open("/proc/cpuinfo") as f:
            ids = {line.partition(":")[2].strip() for line in f if line.partition(":")[0].strip() == "vendor_id"}
    except OSError:
        ids = set()
    if ids:
        assert ids == {vendor}
    else:
        assert vendor in ("", "GenuineIntel", "AuthenticAMD", "HygonGenuine", "CentaurHauls")


def test_cpu_vendor_without_proc_cpuinfo_reads_the_processor_string(monkeypatch):
    """Where /proc/cpuinfo cannot be read (Windows, macOS), the vendor comes from
    ``platform.processor()`` when it names a known CPUID vendor, else it is unknown ("")."""

    def no_file(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(fastmlp, "open", no_file, raising=False)
    fastmlp.cpu_vendor.cache_clear()
    try:
        monkeypatch.setattr(fastmlp.platform, "processor", lambda: "AMD64 Family 25 Model 1 Stepping 1, AuthenticAMD")
        assert fastmlp.cpu_vendor() == "AuthenticAMD"
        fastmlp.cpu_vendor.cache_clear()
        monkeypatch.setattr(fastmlp.platform, "processor", lambda: "Intel64 Family 6 Model 85 Stepping 7, GenuineIntel")
        assert fastmlp.cpu_vendor() == "GenuineIntel"
        fastmlp.cpu_vendor.cache_clear()
        monkeypatch.setattr(fastmlp.platform, "processor", lambda: "arm")
        assert fastmlp.cpu_vendor() == ""
    finally:
        fastmlp.cpu_vendor.cache_clear()
