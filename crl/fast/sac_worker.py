"""Half of a SAC gradient step's matrix products, computed in a second process.

SAC's critics are independent networks: each critic's forward passes, its share of the critic
loss's gradient and the gradient of the actor loss's ``min_k Q_k`` on the rows whose minimum
it is need only the batch, the actor's actions, the soft Bellman target (a minimum over all
target critics) and the critics' parameters. :class:`SacWorker` computes these for the second
half of the critics (critic 1 of SB3's two) in a worker process while the trainer computes them
for the first half; the worker also computes the actor's pass on the next observations (with
the noise the trainer drew for it) and the weight gradient of the actor's last hidden layer,
so that each side does about half of the step's large products, and its critics' half of the
Polyak update. The trainer computes the actor's pass on the batch, its backward pass below the
last hidden layer and every optimizer step (with their hooks). The two meet six or seven times
per gradient step through a few integers in shared memory:

1. the trainer publishes the Gaussian noise of the actor's actions on the next observations
   (the draw ``actor_sample`` makes after the entropy coefficient's step in one process; where
   that optimizer's hooks are local, :func:`crl.fast.adam.local_hooks`, nothing draws between
   the step's two draws, so the trainer makes both before the step starts, the same numbers),
   its actor's actions on the batch, then the entropy coefficient; the worker, which meanwhile
   computed its critics' values on the batch, computes the actor's actions and
   log-probabilities on the next observations (at once, with the noise drawn first);
2. with them, each side computes its target critics' values on the next observations;
3. with all target values, each side computes the soft Bellman target itself (the same
   operations on the same numbers) and its critics' gradients; the trainer makes the worker's
   its critics' ``.grad`` and steps the critics' optimizer;
4. with the updated critics (their parameters live in shared memory, so the optimizer's in-place
   step reaches the worker without a copy), each side computes its critics' values of the
   actor's actions;
5. with all of them, each side takes the minimum and computes the action gradient of its rows;
6. the trainer takes the actor loss's gradient down to the last hidden layer and publishes it
   with that layer's input; the worker computes the layer's weight gradient while the trainer
   goes on down the layers; the trainer steps the actor (its parameters are shared too);
7. on a step with a Polyak update, each side updates its own critics' targets (after the
   actor's step: a hook of the actor's optimizer may write the critics, as Hare & Tortoise's
   reset does), and the trainer waits for the worker's half before the step ends.

Every number is computed by the same operations on the same inputs as
:func:`crl.fast.sac_update.gradient_step` computes it in one process, so the parameters after a
step are bitwise the same (with one torch thread in the trainer, as ``crl train`` sets it;
tested). Feature-capture hooks on the worker's critics are called in the trainer, in the
one-process order, with the features the worker computed.

The trainer starts a step by moving its counter to the step's phase 0. Between steps the worker
spins on that counter for :attr:`SacWorker.IDLE_SPIN` seconds (the env step between two gradient
steps; waking a process asleep on a pipe costs about 2 % of a step), then sleeps on the pipe and
the trainer wakes it with a byte; so it takes no CPU while the trainer is away (the one-process
way chosen, a long rollout). Inside a step both poll the shared counters (yielding the CPU after
a while, for loaded machines), which relies on x86's ordering of stores, as
:class:`crl.fast.critic_worker.CriticWorker`'s handshake does: on other CPUs the step runs in
one process.

Example:
    >>> import gymnasium as gym
    >>> from crl.fast.sac import FastSAC
    >>> model = FastSAC("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=50, batch_size=32,
    ...                 parallel_update=True, seed=0)
    >>> _ = model.learn(60)
    >>> model.fast_path, model.parallel_steps
    (True, 10)
    >>> model.close_workers()
"""

from __future__ import annotations

import math
import os
import statistics
import time
import traceback
from collections import deque
from typing import Any

import torch as th
from torch import nn

from crl.fast.adam import local_hooks
from crl.fast.critic_worker import WorkerProcess, hookless_copy, keep_shared, share_in_place, shared_memory_safe
from crl.fast.sac_update import (
    Batch,
    Chain,
    SacPlan,
    SquashedActor,
    StepOut,
    action_grad_rows,
    actor_loss_grads,
    call_forward_hooks,
    critic_grads,
    critic_loss,
    entropy_step,
    grad_off,
    head_grads,
    min_rows,
    polyak,
    q_values,
    set_grads,
    soft_target,
    step_actor,
    stepper_in_mode,
    weight_grad,
)

__all__ = ["ParallelChooser", "SacWorker", "parallel_gradient_step"]

_WAKE, _ERROR = b"W", b"E"
_T, _W, _SLEEP = 0, 1, 2  # the shared control block: the phase counters, the worker's "asleep on the pipe" flag
_PHASES = 8  # counter values reserved per gradient step
_ARGS = _GAMMA, _NOISE_FIRST, _POLYAK, _TAU = range(4)  # the slots of the shared step arguments


class _Stop(Exception):
    """The trainer asked the worker to quit (or went away) in the middle of a step."""


def _spin(ctl: Any, slot: int, phase: int, check: Any, yield_after: int) -> None:
    """Poll ``ctl[slot]`` until it reaches ``phase``; ``check()`` every 256 polls (it raises to
    stop); after ``yield_after`` polls each poll also yields the CPU (a loaded machine).
    """
    i = 0
    while ctl[slot] < phase:
        i += 1
        if i & 255 == 0:
            check()
        if i > yield_after:
            os.sched_yield()


class _Buffers:
    """The shared tensors of one worker: the batch, what the trainer publishes, what each side
    publishes of its critics and of the actor, the worker's gradients and features, the control block.
    """

    def __init__(self, plan: SacPlan, batch_size: int, theirs: list[int], taps: dict[int, list[int]]) -> None:
        def z(*shape: int) -> th.Tensor:
            return th.zeros(*shape).share_memory_()

        b, od, ad, n = batch_size, plan.obs_dim, plan.mu.out_features, len(plan.critics)
        self.obs, self.actions, self.next_obs, self.rewards, self.dones = z(b, od), z(b, ad), z(b, od), z(b, 1), z(b, 1)
        self.a_pi, self.eps_next, self.ent_coef = z(b, ad), z(b, ad), z(1)
        self.a_next, self.next_log_prob = z(b, ad), z(b)
        self.qs, self.next_qs, self.q_pis, self.g_a = z(n, b, 1), z(n, b, 1), z(n, b, 1), z(b, ad)
        self.grads = {k: [z(*p.shape) for p in _critic_params(plan.critics[k])] for k in theirs}
        widths = {k: [plan.critics[k][0].linears[i].out_features for i in taps[k]] for k in theirs}
        self.feats = {k: [[z(b, w) for w in widths[k]] for _ in range(2)] for k in theirs}  # batch, actor's actions
        last = _last_hidden(plan.actor)  # the actor layer whose weight gradient the worker computes
        shape = (0, 0) if last is None else (last.out_features, last.in_features)
        self.g_last, self.h_prev, self.dw_last = z(b, shape[0]), z(b, shape[1]), z(*shape)
        self.ctl_t = th.tensor([0, 0, 1], dtype=th.int64).share_memory_()
        # the step's arguments, written and read through NumPy views (no torch op per field):
        # the discount, 1.0 where eps_next was drawn before phase 0, 1.0 where the worker makes
        # its Polyak half this step, and that update's factor (0 is a valid one)
        self.args = th.zeros(len(_ARGS), dtype=th.float64).share_memory_()


def _last_hidden(chain: Chain) -> nn.Linear | None:
    """The actor's last hidden ``Linear`` when it has two or more (its weight gradient is a
    large product; a first layer's is a thin one): the worker computes its weight gradient.
    """
    return chain.linears[-1] if len(chain.linears) >= 2 else None


def _critic_params(pair: tuple[Chain, nn.Linear]) -> list[th.Tensor]:
    chain, head = pair
    return [*chain.params(), head.weight, head.bias]


def _pairs_params(pairs: list[tuple[Chain, nn.Linear]]) -> list[th.Tensor]:
    """The parameters of critics ``pairs``, one after the other (one side's half of the Polyak update)."""
    return [p for pair in pairs for p in _critic_params(pair)]


class SacWorker:
    """Computes the second half of a SAC policy's critics in a worker process (see the module
    docstring); :func:`parallel_gradient_step` runs a gradient step with it.

    Args:
        plan: the hand plan of the policy (:class:`crl.fast.sac_update.SacPlan`), two or more critics.
        batch_size: the replay batch's rows.
        start_method: multiprocessing start method (default ``fork`` where available).
    """

    #: Polls of a shared counter before each poll also yields the CPU to other processes.
    YIELD_AFTER = 2000
    #: Seconds the worker spins between gradient steps before it sleeps on the pipe: waking a
    #: sleeping process took ~0.15-0.18 ms on the 2-core machine, about 2 % of a step.
    IDLE_SPIN = 0.005

    def __init__(self, plan: SacPlan, batch_size: int, start_method: str | None = None) -> None:
        n = len(plan.critics)
        self.plan, self.batch_size = plan, int(batch_size)
        self.mine, self.theirs = list(range(n // 2)), list(range(n // 2, n))
        self.taps = {k: [i for i, a in enumerate(plan.critics[k][0].acts) if a._forward_hooks] for k in range(n)}
        self.bufs = _Buffers(plan, self.batch_size, self.theirs, self.taps)
        self.ctl, self.args = self.bufs.ctl_t.numpy(), self.bufs.args.numpy()
        self.params = [*plan.critic_params, *plan.target_params, *plan.pi.params()]
        self.shared = share_in_place(self.params)
        self._ptrs = [t.data_ptr() for t in self.shared]
        self.split_actor = _last_hidden(plan.actor) is not None
        # the trainer's half of the Polyak update (a plan's critics hold no other parameters)
        self.polyak_pairs = tuple(_pairs_params([nets[k] for k in self.mine]) for nets in (plan.targets, plan.critics))
        self._seq = 0
        nets = (self._worker_critics(), self._worker_actor())
        args = (nets, self.bufs, self.theirs, self.taps, plan.obs_dim, os.getpid(), self.YIELD_AFTER, self.IDLE_SPIN)
        self.handle = WorkerProcess(_serve, args, "SAC critic worker", start_method)

    @staticmethod
    def unsupported(plan: SacPlan) -> str | None:
        """Why ``plan``'s critics cannot be split over two processes (``None`` when they can)."""
        if len(plan.critics) < 2:
            return "a single critic"
        if not shared_memory_safe():
            return "the shared-memory handshake needs an x86 CPU"
        if any(p.dtype != th.float32 for p in [*plan.critic_params, *plan.target_params, *plan.pi.params()]):
            return "actor or critic parameters are not float32"
        return None

    def built_for(self, plan: SacPlan, batch_size: int) -> bool:
        """Whether this worker was built for ``plan`` and batches of ``batch_size`` rows (its batch
        buffers, :meth:`batch_buffers`, fit such a batch).
        """
        return plan is self.plan and int(batch_size) == self.batch_size

    def serves(self, plan: SacPlan, batch_size: int) -> bool:
        """Whether this worker was built for ``plan`` and batches of ``batch_size`` rows, its
        parameters still have their shapes and it runs.
        """
        same = all(p.shape == s.shape for p, s in zip(self.params, self.shared, strict=True))
        return self.built_for(plan, batch_size) and same and not self.closed

    def _on_shared(self, net: nn.Module) -> nn.Module:
        """A hookless copy of ``net`` whose parameters are the shared buffers of ``net``'s."""
        index, copy = {id(p): i for i, p in enumerate(self.params)}, hookless_copy(net)
        for p, c in zip(net.parameters(), copy.parameters(), strict=True):
            c.data = self.shared[index[id(p)]]
        return copy

    def _worker_critics(self) -> list[tuple[nn.Module, nn.Module]]:
        """The worker's critics and target critics, on the shared parameters."""
        policy = self.plan.policy
        nets = [(policy.critic.q_networks[k], policy.critic_target.q_networks[k]) for k in self.theirs]
        return [(self._on_shared(q), self._on_shared(t)) for q, t in nets]

    def _worker_actor(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The actor's latent network and heads, on the shared parameters."""
        pi = self.plan.pi
        return self._on_shared(self.plan.policy.actor.latent_pi), self._on_shared(pi.mu), self._on_shared(pi.log_std)

    def share(self) -> None:
        """Keep the trainer's critic, target and actor parameters on the shared buffers (shared in place
        when the worker was built, :func:`crl.fast.critic_worker.share_in_place`): the optimizer
        and the Polyak update then change them where the worker reads them; a parameter given
        new storage (``p.data = ...``) is moved back (:func:`crl.fast.critic_worker.keep_shared`).
        """
        if [p.data_ptr() for p in self.params] != self._ptrs:  # three times a step: the quick look first
            keep_shared(self.params, self.shared)

    @property
    def closed(self) -> bool:
        """Whether the worker process was stopped (:meth:`close`, or an error)."""
        return self.handle.closed

    # -- the trainer's side of the handshake ---------------------------------
    def start(self, batch: Batch, noise_first: bool, tau: float | None) -> int:
        """Copy ``batch`` into shared memory (where it was not sampled there, :meth:`batch_buffers`)
        and start the worker's step; the step's phase base.
        ``noise_first``: ``bufs.eps_next`` holds the step's noise already (else it comes at phase 1);
        ``tau``: the worker makes its half of the Polyak update with it at phase 7 (``None``: no
        update this step).
        """
        self.share()
        b = self.bufs
        pairs = ((b.obs, batch.observations), (b.actions, batch.actions), (b.next_obs, batch.next_observations))
        for buf, x in (*pairs, (b.rewards, batch.rewards), (b.dones, batch.dones)):
            if x is not buf:  # a batch sampled into batch_buffers() is there already
                buf.copy_(x)
        self._seq += 1
        base = self._seq * _PHASES
        args = self.args
        args[_GAMMA] = float(batch.discounts)  # type: ignore[arg-type]
        args[_NOISE_FIRST] = float(noise_first)
        args[_POLYAK] = float(tau is not None)
        args[_TAU] = 0.0 if tau is None else float(tau)
        self.ctl[_T] = base  # the step's phase 0: a spinning worker starts
        if self.ctl[_SLEEP]:  # one asleep on the pipe is woken
            self._send(_WAKE)
        return base

    def batch_buffers(self) -> Batch:
        """The shared tensors :meth:`start` copies a batch into, as a batch (discount 0): a batch
        sampled into them (:func:`crl.fast.sac_update.sample_batch`'s ``into``) needs no copy.
        They are the worker's to read from :meth:`start` until the step ends.
        """
        b = self.bufs
        return Batch(b.obs, b.actions, b.next_obs, b.dones, b.rewards, 0.0)

    def signal(self, phase: int) -> None:
        """Tell the worker the trainer reached ``phase`` (its writes before are visible: x86)."""
        self.ctl[_T] = phase

    def wait(self, phase: int) -> None:
        """Wait until the worker reached ``phase``; its error or death raised here."""
        _spin(self.ctl, _W, phase, self._check, self.YIELD_AFTER)

    def _check(self) -> None:
        conn = self.handle.conn
        if self.ctl[_W] < 0:  # the worker failed: its error's text is in the pipe
            text = conn.recv_bytes()[1:].decode() if conn.poll(5) else "no message"
            self.close()
            raise RuntimeError(f"SAC critic worker failed: {text}")
        if not self.handle.proc.is_alive():
            raise self.handle.died()

    def replay(self, kind: int) -> None:
        """Call the trainer's feature-capture hooks of the worker's critics with the features
        it computed (``kind`` 0: on the batch's actions, 1: on the actor's actions).
        """
        for k in self.theirs:
            acts = self.plan.critics[k][0].acts
            taps = self.taps[k]
            call_forward_hooks([acts[i] for i in taps], [buf.clone() for buf in self.bufs.feats[k][kind]])

    def _send(self, msg: bytes) -> None:
        self.handle.send(msg)

    def close(self) -> None:
        """Stop the worker process (also in the middle of a step)."""
        self.handle.close()


def _publish(bufs: Any, name: str, ks: list[int], values: list[th.Tensor]) -> None:
    """Copy one value per critic ``k`` of ``ks`` into the shared ``bufs.<name>[k]``."""
    buf = getattr(bufs, name)
    for k, v in zip(ks, values, strict=True):
        buf[k].copy_(v)


def _publish_actions(w: SacWorker, cur: dict[str, th.Tensor], base: int, draw: bool) -> None:
    """Phase 1: the actor's actions on the batch and (``draw``) the noise of its pass on the next
    observations, drawn where one process's ``actor_sample`` draws it, after the entropy
    coefficient's step.
    """
    with grad_off():
        if draw:
            w.bufs.eps_next.normal_()
        w.bufs.a_pi.copy_(cur["a"])
    w.signal(base + 1)


def _noise_first(w: SacWorker, batch: Batch) -> th.Tensor:
    """The Gaussian noise of the actor's passes on the batch's observations and then on its next
    observations (the latter into ``bufs.eps_next``), drawn before the step: the draws
    ``actor_sample`` makes in one process, in their order, with only the actor's pass and the
    entropy coefficient's step between them there, which draw nothing where that optimizer's
    hooks are local (:func:`crl.fast.adam.local_hooks`; the actor's hooks are crl's feature
    capture).
    """
    eps = th.empty(len(batch.observations), w.plan.mu.out_features).normal_()
    w.bufs.eps_next.normal_()
    return eps


def _critic_half(
    w: SacWorker, model: Any, batch: Batch, cur: dict[str, th.Tensor], ent_coef: th.Tensor, step: Any, base: int
) -> th.Tensor:
    """The trainer's part of :func:`crl.fast.sac_update.critic_step`; returns the critics' loss."""
    plan, b, mine = w.plan, w.bufs, w.mine
    with grad_off():
        b.ent_coef.copy_(ent_coef)
    qs, saved = q_values([plan.critics[k] for k in mine], th.cat([batch.observations, batch.actions], 1), True)
    w.wait(base + 1)  # the worker's critics on the batch, the actor's next actions
    w.replay(0)
    next_qs, _ = q_values([plan.targets[k] for k in mine], th.cat([batch.next_observations, b.a_next], 1), False)
    _publish(b, "next_qs", mine, next_qs)
    w.signal(base + 2)
    w.wait(base + 2)
    target = soft_target(th.cat(list(b.next_qs), dim=1), b.next_log_prob, ent_coef, batch)
    own = dict(zip(mine, qs, strict=True))
    loss = critic_loss([own[k] if k in own else b.qs[k].clone() for k in range(len(plan.critics))], target)
    grads = {k: critic_grads(*plan.critics[k], own[k], outs, target) for k, outs in zip(mine, saved, strict=True)}
    w.wait(base + 3)
    opt = model.critic.optimizer
    set_grads(opt, plan.critic_params, [g for k in range(len(plan.critics)) for g in grads.get(k, b.grads.get(k))])  # type: ignore[arg-type]
    step(opt)
    w.share()  # a hook that gave a parameter new storage
    w.signal(base + 3)
    return loss


def _actor_half(w: SacWorker, batch: Batch, cur: dict[str, th.Tensor], base: int) -> tuple[th.Tensor, th.Tensor]:
    """The trainer's part of the actor loss's ``min_k Q_k`` and its gradient with respect to the action."""
    plan, b, mine = w.plan, w.bufs, w.mine
    q_pis, saved = q_values([plan.critics[k] for k in mine], th.cat([batch.observations, cur["a"]], 1), True)
    _publish(b, "q_pis", mine, q_pis)
    w.signal(base + 4)
    w.wait(base + 4)
    w.replay(1)
    min_q, rows = min_rows(th.cat(list(b.q_pis), dim=1))
    with grad_off():
        for k, outs in zip(mine, saved, strict=True):
            b.g_a[rows[k]] = action_grad_rows(*plan.critics[k], outs, rows[k], plan.obs_dim)
    w.wait(base + 5)
    return min_q, b.g_a


def _actor_body(w: SacWorker, outs: list[th.Tensor], g_h: th.Tensor, base: int) -> list[th.Tensor]:
    """The actor's layer gradients (:meth:`crl.fast.sac_update.Chain.backward` of ``g_h``), the
    last hidden layer's weight gradient computed by the worker.
    """
    chain, b = w.plan.actor, w.bufs
    if not w.split_actor:
        return chain.backward(outs, g_h)[0]
    n = len(chain.linears)
    g = chain.act_backward(n - 1, g_h, outs[n])
    with grad_off():
        b.g_last.copy_(g)
        b.h_prev.copy_(outs[n - 1])
        w.signal(base + 5)
        bias = g.sum(0)
        g = g @ chain.linears[n - 1].weight
    below, _ = chain.prefix(n - 1).backward(outs[:n], g)
    w.wait(base + 6)  # the worker's weight gradient
    return [*below, b.dw_last, bias]


def parallel_gradient_step(w: SacWorker, model: Any, batch: Batch, polyak_now: bool, step: Any) -> StepOut:
    """:func:`crl.fast.sac_update.gradient_step` with the worker ``w`` computing half of the
    large products (see the module docstring): the same draws, the same numbers. An exception
    stops the worker (the next step builds a new one).
    """
    step = stepper_in_mode(step, th.is_grad_enabled())
    try:
        with th.no_grad():  # once for the whole step (grad_off)
            return _parallel_step(w, model, batch, polyak_now, step)
    except BaseException:  # also from a hook: a worker left waiting for phase 7 would update later
        w.close()
        raise


def _parallel_step(w: SacWorker, model: Any, batch: Batch, polyak_now: bool, step: Any) -> StepOut:
    """The body of :func:`parallel_gradient_step` (under ``no_grad``)."""
    plan = w.plan
    first = local_hooks(model.ent_coef_optimizer)
    eps = _noise_first(w, batch) if first else None  # the worker's pass on the next observations at once
    base = w.start(batch, noise_first=first, tau=model.tau if polyak_now else None)
    cur = plan.actor_sample(batch.observations, hooks=True, eps=eps)
    if first:
        _publish_actions(w, cur, base, draw=False)
    ent_coef, ent_loss = entropy_step(model, cur["log_prob"].reshape(-1, 1), step)
    if not first:
        _publish_actions(w, cur, base, draw=True)
    critic_loss_ = _critic_half(w, model, batch, cur, ent_coef, step, base)
    min_q, dq_da = _actor_half(w, batch, cur, base)
    actor_loss, g_heads, g_h = actor_loss_grads(cur, min_q, dq_da, ent_coef)
    body = _actor_body(w, cur["outs"], g_h, base)
    step_actor(plan, model, [*body, *head_grads(g_heads, cur["outs"][-1], plan.mu.out_features)], step)
    w.share()  # a hook that gave an actor parameter new storage
    if polyak_now:  # after the actor's step: its hooks may write the critics (Hare & Tortoise)
        w.signal(base + 7)
        polyak(*w.polyak_pairs, model.tau)
        w.wait(base + 7)  # the worker's half
    return StepOut(critic_loss_, actor_loss, ent_coef, ent_loss)


class ParallelChooser:
    """Which of the two ways of a gradient step (one process, or with the worker: the same
    numbers either way) runs next, from timing both now and then: :attr:`PROBE` steps each way,
    alternating (so that a change in the machine's speed during the probe hits both ways
    alike), then up to :attr:`KEEP` steps the way whose median step was faster, and again. Where
    other jobs hold the second core the worker's half waits for a core and the step is slower
    than in one process (measured: 0.5-0.96x at load 4 on 2 cores); the probes see it and go back.
    The machine may change within a keep phase too (a shared VM's second core slowed for tens of
    seconds): when the median of the last :attr:`WINDOW` kept steps is :attr:`SLOWER` times the
    probe's median of that way, the next probe starts at once.

    Example:
        >>> c = ParallelChooser()
        >>> for _ in range(2 * c.PROBE):
        ...     c.record(c.parallel(), 0.010 if c.parallel() else 0.020)
        >>> c.parallel(), c.speedup
        (True, 2.0)
        >>> for _ in range(c.WINDOW):  # the worker's steps get 1.5x slower: a new probe
        ...     c.record(c.parallel(), 0.015)
        >>> c.probing
        True
    """

    #: Gradient steps timed each way per probe.
    PROBE = 32
    #: Gradient steps the faster way runs before the next probe, at most.
    KEEP = 2000
    #: Kept steps whose median is compared with the probe's.
    WINDOW = 64
    #: How much slower than in the probe the kept way's recent median may get before a new probe.
    SLOWER = 1.25

    def __init__(self) -> None:
        self.j = 0  # steps into the current probe-and-keep cycle
        self.seconds: tuple[list[float], list[float]] = ([], [])  # one process, worker: this probe's steps
        self.use = True
        self.speedup: float | None = None  # the last probe's median one-process step over the worker's
        self.kept = math.inf  # the probe's median step of the way kept
        self.recent: deque[float] = deque(maxlen=self.WINDOW)

    @property
    def probing(self) -> bool:
        """Whether the next step belongs to a probe."""
        return self.j < 2 * self.PROBE

    def parallel(self) -> bool:
        """Whether the next gradient step uses the worker."""
        return bool(self.j % 2) if self.probing else self.use

    def record(self, parallel: bool, seconds: float) -> None:
        """The step just taken (:meth:`parallel`'s way) took ``seconds``."""
        if self.probing:
            self.seconds[int(parallel)].append(seconds)
            self.j += 1
            if not self.probing:
                self._decide()
            return
        self.recent.append(seconds)
        self.j += 1
        slowed = len(self.recent) == self.WINDOW and statistics.median(self.recent) > self.SLOWER * self.kept
        if slowed or self.j >= 2 * self.PROBE + self.KEEP:
            self.j = 0

    def _decide(self) -> None:
        one, two = (statistics.median(s) if s else math.inf for s in self.seconds)
        self.speedup = one / two if 0 < two < math.inf and one < math.inf else None
        self.use, self.seconds = two < one, ([], [])
        self.kept = min(one, two)
        self.recent = deque(maxlen=self.WINDOW)


# -- the worker process ------------------------------------------------------------------
def _serve(conn: Any, nets: tuple[Any, Any], bufs: _Buffers, *args: Any) -> None:
    """The worker process's work (see :class:`crl.fast.critic_worker.WorkerProcess`): a
    :class:`_Server` on the pipe ``conn``.
    """
    with th.no_grad():  # the worker computes without autograd (grad_off)
        _Server(conn, nets, bufs, *args).run()


class _Server:
    """The worker's side of :class:`SacWorker`: one gradient step per pipe message."""

    def __init__(
        self,
        conn: Any,
        nets: tuple[list[Any], tuple[Any, Any, Any]],
        bufs: _Buffers,
        theirs: list[int],
        taps: dict[int, list[int]],
        obs_dim: int,
        parent_pid: int,
        yield_after: int,
        idle_spin: float,
    ) -> None:
        pairs, (latent, mu, log_std) = nets
        self.conn, self.b, self.theirs, self.taps, self.obs_dim = conn, bufs, theirs, taps, obs_dim
        self.critics = [(Chain.of(list(q)[:-1]), q[-1]) for q, _ in pairs]
        self.targets = [(Chain.of(list(t)[:-1]), t[-1]) for _, t in pairs]
        self.actor = SquashedActor(Chain.of(list(latent)), mu, log_std)
        self.split_actor = _last_hidden(self.actor.chain) is not None
        self.critic_params, self.target_params = _pairs_params(self.critics), _pairs_params(self.targets)
        self.ctl, self.args = bufs.ctl_t.numpy(), bufs.args.numpy()
        self.parent_pid, self.yield_after, self.idle_spin = parent_pid, yield_after, idle_spin

    def _check(self) -> None:
        """Raise :class:`_Stop` when the trainer asked to quit or is gone (a late wake-up byte is dropped)."""
        if (self.conn.poll(0) and self.conn.recv_bytes() != _WAKE) or os.getppid() != self.parent_pid:
            raise _Stop

    def wait(self, phase: int) -> None:
        _spin(self.ctl, _T, phase, self._check, self.yield_after)

    def features(self, kind: int, saved: list[list[th.Tensor]]) -> None:
        for k, outs in zip(self.theirs, saved, strict=True):
            for i, buf in zip(self.taps[k], self.b.feats[k][kind], strict=True):
                buf.copy_(outs[i + 1])

    def step(self, base: int, gamma: float) -> None:
        """The worker's half of one gradient step (phases as in the module docstring)."""
        b, ks = self.b, self.theirs
        batch = Batch(b.obs, b.actions, b.next_obs, b.dones, b.rewards, gamma)
        qs, saved = q_values(self.critics, th.cat([b.obs, b.actions], 1), False)
        _publish(b, "qs", ks, qs)
        self.features(0, saved)
        if not self.args[_NOISE_FIRST]:
            self.wait(base + 1)
        nxt = self.actor.sample(b.next_obs, hooks=False, eps=b.eps_next)
        b.a_next.copy_(nxt["a"])
        b.next_log_prob.copy_(nxt["log_prob"])
        self.ctl[_W] = base + 1
        next_qs, _ = q_values(self.targets, th.cat([b.next_obs, b.a_next], 1), False)
        _publish(b, "next_qs", ks, next_qs)
        self.ctl[_W] = base + 2
        self.wait(base + 2)
        target = soft_target(th.cat(list(b.next_qs), dim=1), b.next_log_prob, b.ent_coef, batch)
        for k, pair, q, outs in zip(ks, self.critics, qs, saved, strict=True):
            th._foreach_copy_(b.grads[k], critic_grads(*pair, q, outs, target))
        self.ctl[_W] = base + 3
        self.wait(base + 3)
        q_pis, saved = q_values(self.critics, th.cat([b.obs, b.a_pi], 1), False)
        _publish(b, "q_pis", ks, q_pis)
        self.features(1, saved)
        self.ctl[_W] = base + 4
        self.wait(base + 4)
        _, rows = min_rows(th.cat(list(b.q_pis), dim=1))
        with grad_off():
            for k, pair, outs in zip(ks, self.critics, saved, strict=True):
                b.g_a[rows[k]] = action_grad_rows(*pair, outs, rows[k], self.obs_dim)
        self.ctl[_W] = base + 5
        if self.split_actor:
            self.wait(base + 5)
            b.dw_last.copy_(weight_grad(b.g_last, b.h_prev))
            self.ctl[_W] = base + 6
        if self.args[_POLYAK]:
            self.wait(base + 7)
            polyak(self.target_params, self.critic_params, float(self.args[_TAU]))
            self.ctl[_W] = base + 7

    def next_step(self, base: int) -> bool:
        """Wait for the step of phase base ``base``: spinning for up to :attr:`SacWorker.IDLE_SPIN`
        seconds (the env step between two gradient steps), then asleep on the pipe, with the
        flag up that asks the trainer for a wake-up byte (and a look at the counter every 50 ms,
        in case the two crossed). ``False``: the trainer asked to quit or is gone.
        """
        try:
            deadline = time.perf_counter() + self.idle_spin
            while self.ctl[_T] < base:
                self._check()
                if time.perf_counter() > deadline:
                    break
                for _ in range(256):
                    if self.ctl[_T] >= base:
                        return True
                os.sched_yield()  # to other processes, on a loaded machine
            self.ctl[_SLEEP] = 1
            while self.ctl[_T] < base:
                if self.conn.poll(0.05) and self.conn.recv_bytes() != _WAKE:
                    return False
                if os.getppid() != self.parent_pid:
                    return False
            self.ctl[_SLEEP] = 0
            return True
        except _Stop:
            return False

    def run(self) -> None:
        """Serve until quit, the pipe's end, or the trainer's exit."""
        base = _PHASES
        try:
            while self.next_step(base):
                try:
                    self.step(base, float(self.args[_GAMMA]))
                except _Stop:
                    return
                except Exception as e:
                    self.conn.send_bytes(_ERROR + f"{type(e).__name__}: {e}\n{traceback.format_exc()}".encode())
                    self.ctl[_W] = -1
                    return
                base += _PHASES
        except (EOFError, BrokenPipeError, KeyboardInterrupt):
            return
