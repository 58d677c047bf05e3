"""The critic's half of a PPO minibatch step, computed in a second process.

SB3's ``MlpPolicy`` keeps separate actor and critic networks behind a parameter-free features
extractor, so the PPO loss ``policy_loss + ent_coef * entropy_loss + vf_coef * value_loss``
is a sum of an actor term and a critic term with disjoint parameters: the critic's gradient is
``d(vf_coef * value_loss)/d(critic)``, whatever the actor does. :class:`CriticWorker` computes
it in a worker process while the trainer computes the actor's, then hands it back as the
critic parameters' ``.grad``; the optimizer step (and every hook on it) stays in the trainer.
The worker runs the same operations on the same numbers as the trainer would, so the
gradients are bitwise those of the single-process step.

Python threads do not help here: on 2 cores, a thread computing the critic slowed the actor's
thread so much (the GIL changes hands at every one of the ~100 small torch calls of a
minibatch) that the pair took 1.7 ms per minibatch against 2.1 ms one after the other, while
a separate process ran beside the actor without slowing it (1.31 ms against 1.28 ms alone).

Protocol (one pipe, small fixed messages; the data lives in shared memory):

- ``begin``: the update's critic features and returns are copied into shared buffers;
- ``epoch``: the epoch's minibatch order;
- ``submit(start, stop)``: the worker computes the loss and gradients of rows
  ``order[start:stop]`` with the current critic parameters (the trainer's critic parameters
  live in shared buffers, so the optimizer's in-place steps reach the worker without a copy;
  a parameter given new storage, ``p.data = ...``, is moved back into them first);
- ``collect``: waits for the worker, makes its gradients the ``.grad`` of the trainer's
  critic parameters and replays the trainer's feature-capture hooks
  (:func:`crl.plasticity.nets.capture_features`) with the features the worker computed;
- ``end``: the update is over.

With ``spin`` (the default on x86-64 machines where both processes have a core), ``submit``
and ``collect`` go through a few integers in shared memory that both sides poll during an
update, instead of the pipe: a pipe message and the wake-up of a blocked process cost
~30-60 us per minibatch on the 2-core benchmark machine, the shared-memory handshake a few.
The worker polls only between ``begin`` and ``end`` (and goes back to the pipe after
:attr:`CriticWorker.SPIN_IDLE` seconds without work); x86's ordering of stores makes the
handshake safe without explicit fences, so other CPUs use the pipe.

The pipe is also the fallback everywhere: set the environment variable ``CRL_CRITIC_HANDSHAKE``
(:data:`HANDSHAKE_ENV`, read when a worker is built without an explicit ``spin``) to ``pipe``
to hand every minibatch over through the pipe, ``shared`` for the shared-memory handshake (x86
only), or ``auto`` (the default above). The results are the same either way (tested).

Example:
    >>> import gymnasium as gym, torch
    >>> from crl.fast.ppo import FastPPO
    >>> model = FastPPO("MlpPolicy", gym.make("Pendulum-v1"), n_steps=64, batch_size=32, seed=0)
    >>> CriticWorker.unsupported(model.policy) is None
    True
    >>> worker = CriticWorker(model.policy, n=64, batch_size=32)
    >>> feats, returns = torch.randn(64, 3), torch.randn(64)
    >>> worker.begin(feats, returns, vf_coef=0.5, training=True)
    >>> worker.epoch(torch.arange(64))
    >>> worker.submit(0, 32)
    >>> value_loss = worker.collect()
    >>> values = model.policy.value_net(model.policy.mlp_extractor.forward_critic(feats[:32])).flatten()
    >>> bool(torch.isclose(value_loss, torch.nn.functional.mse_loss(returns[:32], values)))
    True
    >>> worker.close()
"""

from __future__ import annotations

import contextlib
import copy
import functools
import multiprocessing as mp
import os
import platform
import signal
import struct
import time
import traceback
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from crl.fast.mlp import MlpPlan, global_module_hooks, has_grad_hooks, is_feature_hook, random_modules
from crl.system import usable_cores

__all__ = [
    "HANDSHAKE_ENV",
    "QUIT",
    "CriticWorker",
    "WorkerProcess",
    "critic_modules",
    "default_spin",
    "hand_critic_step",
    "hookless_copy",
    "keep_shared",
    "share_in_place",
    "shared_memory_safe",
]

_BEGIN, _MINIBATCH, _DONE, _ERROR, _END, _WAKE = b"B", b"M", b"D", b"E", b"N", b"W"
#: The message that asks any :class:`WorkerProcess` to quit.
QUIT = b"Q"
# the shared control block of the spinning handshake: submitted sequence number, rows, done
# sequence number (minus it on an error, whose text comes through the pipe)
_SEQ, _START, _STOP, _DONE_SEQ = range(4)


#: The environment variable that picks how a :class:`CriticWorker` built without ``spin`` hands
#: minibatches over: ``pipe``, ``shared`` (x86 only) or ``auto`` (see the module docstring).
HANDSHAKE_ENV = "CRL_CRITIC_HANDSHAKE"


def share_in_place(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Move each tensor's storage into shared memory in place and return aliases of them.

    ``Tensor.share_memory_`` swaps the storage's memory under every tensor that views it, so
    what others hold on a parameter (an optimizer's state keys, an intervention's
    ``p.detach()``, e.g. Hare & Tortoise's EMA pairs) keeps reading and writing the values the
    worker process sees. Giving a parameter new storage (``p.data = buf``) instead would leave
    those views on the old memory, reading stale values.
    """
    with torch.no_grad():
        for t in tensors:
            t.share_memory_()
    return [t.detach() for t in tensors]


@functools.cache
def shared_memory_safe() -> bool:
    """Whether this CPU orders stores as x86 does, which the shared-memory handshake relies on."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def default_spin() -> bool:
    """Whether a :class:`CriticWorker` built without ``spin`` uses the shared-memory handshake:
    as :data:`HANDSHAKE_ENV` says, or by default on x86 with 2+ usable cores.

    ``CRL_CRITIC_HANDSHAKE=pipe crl train ...`` trains with the pipe fallback.
    """
    mode = os.environ.get(HANDSHAKE_ENV, "").strip().lower() or "auto"
    if mode == "pipe":
        return False
    if mode == "shared":
        if not shared_memory_safe():
            raise ValueError(f"{HANDSHAKE_ENV}=shared: the shared-memory handshake needs an x86 CPU")
        return True
    if mode == "auto":
        return usable_cores() >= 2 and shared_memory_safe()
    raise ValueError(f"{HANDSHAKE_ENV}={mode!r}: expected pipe, shared or auto")


def critic_modules(policy: Any) -> tuple[nn.Module, nn.Module]:
    """The critic of an SB3 ``ActorCriticPolicy``: its hidden layers and its value head."""
    return policy.mlp_extractor.value_net, policy.value_net


def hand_critic_step(
    plan: MlpPlan, features: torch.Tensor, returns: torch.Tensor, vf_coef: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """PPO's value loss ``mse_loss(returns, values)`` of the critic ``plan`` (a
    :class:`crl.fast.mlp.MlpPlan`) and the gradients of ``vf_coef * value_loss``, one per
    parameter of :attr:`~crl.fast.mlp.MlpPlan.params`, computed by hand (the same math as
    autograd, up to float rounding).
    """
    values, inputs = plan.forward(features)
    with torch.no_grad():
        values = values.flatten()
        value_loss = F.mse_loss(returns, values)
        grad_values = (values - returns) * (2.0 * vf_coef / values.numel())
    return value_loss, plan.param_grads(inputs, grad_values[:, None])


def _taps(body: nn.Module) -> list[int]:
    """Indices (in ``body.modules()`` order) of the modules carrying feature-capture hooks."""
    return [i for i, m in enumerate(body.modules()) if m._forward_hooks]


class WorkerProcess:
    """A daemon worker process and the trainer's end of its pipe, shared by the critic workers.

    ``serve(conn, *args)`` runs in the new process (with one torch thread and Ctrl-C ignored:
    the trainer handles it, then asks the worker to quit); the trainer sends bytes with
    :meth:`send` and stops the process with :meth:`close`, which also works in the middle of
    a step. ``name`` words the errors ("the critic worker process died ...").

    Args:
        serve: a module-level function (``spawn`` pickles it by name).
        args: its arguments after the pipe.
        name: what the worker is called in error messages.
        start_method: multiprocessing start method (default ``fork`` where available).
    """

    def __init__(self, serve: Any, args: tuple[Any, ...], name: str, start_method: str | None = None) -> None:
        method = start_method or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        ctx = mp.get_context(method)
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(serve, child, self.conn, *args), daemon=True)
        self.proc.start()
        child.close()
        self.closed = False

    def died(self) -> RuntimeError:
        """Close the handle and return the error saying the process died."""
        self.close()
        return RuntimeError(f"the {self.name} process died (see its output above)")

    def send(self, msg: bytes) -> None:
        """Send ``msg`` down the pipe; a closed handle or a dead process raises."""
        if self.closed:
            raise RuntimeError(f"the {self.name} is closed")
        try:
            self.conn.send_bytes(msg)
        except (BrokenPipeError, OSError):
            raise self.died() from None

    def close(self) -> None:
        """Ask the process to quit, wait for it (terminate it after 5 s) and close the pipe."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send_bytes(QUIT)
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
        self.conn.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


def _worker_main(serve: Any, conn: Any, parent_end: Any, *args: Any) -> None:
    """A :class:`WorkerProcess`'s entry point: set the process up, then ``serve(conn, *args)``."""
    parent_end.close()  # the trainer's end of the pipe, copied by fork (or passed by spawn)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle; it then sends quit
    torch.set_num_threads(1)
    serve(conn, *args)


def keep_shared(params: list[torch.Tensor], shared: list[torch.Tensor]) -> None:
    """Keep ``params`` on their ``shared`` buffers (see :func:`share_in_place`): a parameter given
    new storage (``p.data = ...``) has its values copied into its buffer and is moved back; a
    parameter whose shape changed raises.
    """
    with torch.no_grad():
        for p, buf in zip(params, shared, strict=True):
            if p.data_ptr() != buf.data_ptr():
                if p.shape != buf.shape:
                    raise RuntimeError("a critic parameter changed shape while a critic worker serves it")
                buf.copy_(p)
                p.data = buf


class CriticWorker:
    """Computes the critic's PPO gradients in a worker process (see the module docstring).

    Args:
        policy: an SB3 ``ActorCriticPolicy`` that :meth:`unsupported` accepts.
        n: rows of the rollout (samples per update).
        batch_size: the largest minibatch.
        start_method: multiprocessing start method (default ``fork`` where available, like
            :class:`crl.fast.vecenv.ProcVecEnv`).
        spin: hand minibatches over through shared memory, both processes polling during an
            update (see the module docstring); default: :func:`default_spin` (``False``: the pipe).
    """

    #: Seconds a spinning worker waits for the next minibatch before it blocks on the pipe.
    SPIN_IDLE = 1.0
    #: Seconds a spinning trainer waits for a minibatch before it wakes the worker by pipe (a
    #: worker that went back to the pipe, :attr:`SPIN_IDLE`, misses a submission).
    WAKE_AFTER = 0.02

    def __init__(
        self, policy: Any, n: int, batch_size: int, start_method: str | None = None, spin: bool | None = None
    ) -> None:
        body, head = critic_modules(policy)
        self.body, self.head = body, head
        self.params = [*body.parameters(), *head.parameters()]
        self.n, self.batch_size = int(n), int(batch_size)
        self.signature = self.signature_of(policy, n, batch_size)
        feat_dim = next(m for m in body.modules() if isinstance(m, nn.Linear)).in_features if body else head.in_features
        self._feats = torch.zeros(self.n, feat_dim).share_memory_()
        self._returns = torch.zeros(self.n).share_memory_()
        self._order = torch.zeros(self.n, dtype=torch.long).share_memory_()
        self._params = share_in_place(self.params)
        self._grads = [torch.zeros_like(p).share_memory_() for p in self.params]
        self._loss = torch.zeros(()).share_memory_()
        self.spin = default_spin() if spin is None else bool(spin)
        self._ctl_t = torch.zeros(4, dtype=torch.int64).share_memory_()
        self._ctl = self._ctl_t.numpy()
        self._seq = 0
        modules, taps = list(body.modules()), _taps(body)
        self._tapped = [modules[i] for i in taps]
        self._tap_bufs = [torch.zeros(0).share_memory_() for _ in self._tapped]
        if self._tapped:  # the width of each tapped output, from a dry run of the trainer's critic
            probe = torch.zeros(1, feat_dim)
            outs: dict[int, torch.Tensor] = {}
            handles = [
                m.register_forward_hook(lambda mod, a, o, k=k: outs.__setitem__(k, o))
                for k, m in enumerate(self._tapped)
            ]
            try:
                with torch.no_grad():
                    body(probe)
            finally:
                for h in handles:
                    h.remove()
            shapes = [outs[k].shape[1:] for k in range(len(self._tapped))]
            self._tap_bufs = [torch.zeros(self.batch_size, *shape).share_memory_() for shape in shapes]
        self._rows = 0
        # the worker's copy of the critic: no hooks, parameters living in the shared buffers
        w_body, w_head = hookless_copy(body), hookless_copy(head)
        for p, buf in zip([*w_body.parameters(), *w_head.parameters()], self._params, strict=True):
            p.data = buf
        bufs = (self._feats, self._returns, self._order, self._grads, self._loss, taps, self._tap_bufs, self._ctl_t)
        idle = self.SPIN_IDLE if self.spin else 0.0
        self.handle = WorkerProcess(_serve, (w_body, w_head, bufs, os.getpid(), idle), "critic worker", start_method)

    # -- eligibility ---------------------------------------------------------
    @staticmethod
    def unsupported(policy: Any) -> str | None:
        """Why ``policy``'s critic cannot be split off (``None`` when it can)."""
        from stable_baselines3.common.policies import ActorCriticPolicy
        from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor

        from crl.plasticity.policies import ArchMlpExtractor

        if not isinstance(policy, ActorCriticPolicy):
            return "not an ActorCriticPolicy"
        if policy.device.type != "cpu":
            return "not on the CPU"
        if type(policy.mlp_extractor) not in (MlpExtractor, ArchMlpExtractor):
            return f"unknown mlp_extractor {type(policy.mlp_extractor).__name__}"
        for ext in (policy.features_extractor, policy.pi_features_extractor, policy.vf_features_extractor):
            if type(ext) is not FlattenExtractor:
                return f"features extractor {type(ext).__name__} (only FlattenExtractor has no parameters)"
        body, head = critic_modules(policy)
        if not isinstance(head, nn.Linear):
            return f"value head {type(head).__name__} is not a Linear layer"
        if random := random_modules(body, head):
            return f"the critic has {random[0]} layers (their masks come from the trainer's random stream)"
        critic = {id(p) for p in [*body.parameters(), *head.parameters()]}
        critic_names = ("mlp_extractor.value_net.", "value_net.")
        if any(id(p) in critic for n, p in policy.named_parameters() if not n.startswith(critic_names)):
            return "actor and critic share parameters"
        if any(p.dtype != torch.float32 for p in [*body.parameters(), *head.parameters()]):
            return "critic parameters are not float32"
        if global_module_hooks():
            return "global module hooks are registered"
        if head._forward_hooks:
            return "the value head has forward hooks"
        for m in [*body.modules(), *head.modules()]:
            if m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
                return f"{type(m).__name__} of the critic has pre-forward or backward hooks"
            if any(not is_feature_hook(h) for h in m._forward_hooks.values()):
                return f"{type(m).__name__} of the critic has a forward hook other than crl's feature capture"
        for p in [*body.parameters(), *head.parameters()]:
            if has_grad_hooks(p):
                return "a critic parameter has gradient hooks"
        return None

    @staticmethod
    def signature_of(policy: Any, n: int, batch_size: int) -> tuple[Any, ...]:
        """What the worker was built for: when it changes, build a new worker."""
        body, head = critic_modules(policy)
        mods = [*body.modules(), *head.modules()]
        return (
            int(n),
            int(batch_size),
            tuple(id(m) for m in mods),
            tuple(tuple(p.shape) for p in [*body.parameters(), *head.parameters()]),
            tuple(_taps(body)),
            tuple(tuple(m._forward_hooks) for m in body.modules()),
        )

    def serves(self, policy: Any) -> bool:
        """Whether ``policy``'s critic is still the one this worker was built for (an
        intervention may swap modules between two minibatches, e.g. plasticity injection).
        """
        body, head = critic_modules(policy)
        return body is self.body and head is self.head

    # -- protocol --------------------------------------------------------------
    def begin(
        self, features: torch.Tensor, returns: torch.Tensor, vf_coef: float, training: bool, hand: bool = True
    ) -> None:
        """Start an update on the critic ``features`` (rows x features) and ``returns``; with
        ``hand``, the worker computes the gradients by hand (:func:`hand_critic_step`) where
        :class:`crl.fast.mlp.MlpPlan` covers the critic, else with autograd.
        """
        self._feats.copy_(features)
        self._returns.copy_(returns)
        self._send(_BEGIN + struct.pack("<d??", float(vf_coef), bool(training), bool(hand)))

    def epoch(self, order: torch.Tensor) -> None:
        """The minibatch order of the next epoch (a permutation of the rows)."""
        self._order.copy_(order)

    def submit(self, start: int, stop: int) -> None:
        """Compute, with the current critic parameters, the minibatch ``order[start:stop]``."""
        keep_shared(self.params, self._params)  # a no-op unless something gave a parameter new storage
        self._rows = stop - start
        if not self.spin:
            self._send(_MINIBATCH + struct.pack("<qq", int(start), int(stop)))
            return
        if self.closed:
            raise RuntimeError("the critic worker is closed")
        ctl = self._ctl
        ctl[_START], ctl[_STOP] = start, stop
        self._seq += 1
        ctl[_SEQ] = self._seq  # last: the worker reads the rows once it sees the number

    def _wait_spinning(self) -> None:
        """Poll the shared block until the worker is done with the submitted minibatch."""
        ctl, seq = self._ctl, self._seq
        i, since, woken = 0, 0.0, False
        while ctl[_DONE_SEQ] != seq:
            if ctl[_DONE_SEQ] == -seq:  # the error's text is in the pipe
                self._reply()
            i += 1
            if i & 1023 == 0:
                if not self.handle.proc.is_alive():
                    raise self.handle.died()
                now = time.perf_counter()
                since = since or now
                if not woken and now - since > self.WAKE_AFTER:  # it may have gone back to the pipe
                    self._send(_WAKE)
                    woken = True

    def _reply(self) -> None:
        """Read the worker's pipe reply to a minibatch: done, or its error raised here."""
        try:
            reply = self.handle.conn.recv_bytes()
        except EOFError:
            raise self.handle.died() from None
        if reply[:1] == _ERROR:
            self.close()
            raise RuntimeError(f"critic worker failed: {reply[1:].decode()}")

    def collect(self) -> torch.Tensor:
        """Wait for the submitted minibatch; set the critic's ``.grad`` and return its value loss."""
        if self.spin:
            self._wait_spinning()
        else:
            self._reply()
        for p, g in zip(self.params, self._grads, strict=True):
            p.grad = g
        for m, buf in zip(self._tapped, self._tap_bufs, strict=True):
            out = buf[: self._rows].clone()
            for hook in list(m._forward_hooks.values()):
                hook(m, (), out)
        return self._loss.clone()

    def end(self) -> None:
        """The update is over: a spinning worker stops polling and blocks on its pipe."""
        if self.spin and not self.closed:
            self._send(_END)

    @property
    def closed(self) -> bool:
        """Whether the worker process was stopped (:meth:`close`, or an error)."""
        return self.handle.closed

    def _send(self, msg: bytes) -> None:
        self.handle.send(msg)

    def close(self) -> None:
        """Stop the worker process."""
        self.handle.close()


def hookless_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without any hooks (they belong to the trainer's process)."""
    hooks = [(m, m._forward_hooks, m._forward_pre_hooks) for m in module.modules()]
    try:
        for m, _, _ in hooks:
            m._forward_hooks, m._forward_pre_hooks = type(m._forward_hooks)(), type(m._forward_pre_hooks)()
        return copy.deepcopy(module)
    finally:
        for m, fh, fph in hooks:
            m._forward_hooks, m._forward_pre_hooks = fh, fph


def _serve(
    conn: Any, body: nn.Module, head: nn.Module, bufs: tuple[Any, ...], parent_pid: int, spin_idle: float = 0.0
) -> None:
    """The worker process's work (see :class:`WorkerProcess`): a :class:`_Server` on the pipe ``conn``."""
    _Server(conn, body, head, bufs, parent_pid, spin_idle).run()


def _add_taps(body: nn.Module, taps: list[int], tap_bufs: list[torch.Tensor]) -> None:
    """Forward hooks on the modules ``taps`` of ``body`` that copy their outputs into ``tap_bufs``."""
    modules = list(body.modules())
    for i, buf in zip(taps, tap_bufs, strict=True):

        def tap(module: nn.Module, args: Any, out: torch.Tensor, buf: torch.Tensor = buf) -> None:
            buf[: out.shape[0]].copy_(out.detach())  # returns None: the output itself is unchanged

        tap._crl_features = True  # type: ignore[attr-defined]  # MlpPlan calls it as it calls the trainer's
        modules[i].register_forward_hook(tap)


class _Server:
    """The worker's side of :class:`CriticWorker`: commands from the pipe; between ``begin``
    and ``end``, with ``spin_idle``, minibatches from the shared control block.
    """

    def __init__(
        self, conn: Any, body: nn.Module, head: nn.Module, bufs: tuple[Any, ...], parent_pid: int, spin_idle: float
    ) -> None:
        self.conn, self.body, self.head = conn, body, head
        self.feats, self.returns, self.order, self.grads, self.loss_buf, taps, tap_bufs, ctl_t = bufs
        self.ctl = ctl_t.numpy()
        self.params = [*body.parameters(), *head.parameters()]
        self.parent_pid, self.spin_idle = parent_pid, spin_idle
        _add_taps(body, taps, tap_bufs)
        self.hand_plan = MlpPlan.of(body, head)
        self.plan: MlpPlan | None = None
        self.vf_coef = 1.0

    def minibatch(self, start: int, stop: int) -> None:
        """The loss and gradients of rows ``order[start:stop]``, into the shared buffers."""
        idx = self.order[start:stop]
        if self.plan is not None:
            value_loss, new = hand_critic_step(self.plan, self.feats[idx], self.returns[idx], self.vf_coef)
        else:
            values = self.head(self.body(self.feats[idx]))
            value_loss = F.mse_loss(self.returns[idx], values.flatten())
            new = list(torch.autograd.grad(self.vf_coef * value_loss, self.params))
        with torch.no_grad():
            torch._foreach_copy_(self.grads, new)
            self.loss_buf.copy_(value_loss.detach())

    def error(self, e: Exception) -> None:
        self.conn.send_bytes(_ERROR + f"{type(e).__name__}: {e}\n{traceback.format_exc()}".encode())

    def spin(self, last: int) -> int:
        """Run the submitted minibatches until a pipe message or :attr:`CriticWorker.SPIN_IDLE`
        seconds without one; the last sequence number handled.
        """
        ctl, conn = self.ctl, self.conn
        i, idle_since = 0, time.perf_counter()
        while True:
            seq = int(ctl[_SEQ])
            if seq != last:
                try:
                    self.minibatch(int(ctl[_START]), int(ctl[_STOP]))
                    ctl[_DONE_SEQ] = seq
                except Exception as e:
                    self.error(e)  # first the text, then the sign the trainer waits for
                    ctl[_DONE_SEQ] = -seq
                last, idle_since = seq, time.perf_counter()
                continue
            i += 1
            if i & 255 == 0 and (conn.poll(0) or time.perf_counter() - idle_since > self.spin_idle):
                return last

    def receive(self) -> bytes | None:
        """The next pipe message; ``None`` once the trainer is gone (e.g. SIGKILL)."""
        while not self.conn.poll(1.0):
            if os.getppid() != self.parent_pid:
                return None
        return self.conn.recv_bytes()

    def handle(self, msg: bytes, spinning: bool) -> bool:
        """Carry out a pipe command other than quit; whether to spin next."""
        op = msg[:1]
        if op == _END:
            return False
        if op == _WAKE:  # a submission the pipe loop did not see
            return self.spin_idle > 0
        try:
            if op == _BEGIN:
                vf_coef, training, hand = struct.unpack("<d??", msg[1:])
                self.vf_coef, self.plan = vf_coef, self.hand_plan if hand else None
                self.body.train(training)
                self.head.train(training)
                return self.spin_idle > 0
            self.minibatch(*struct.unpack("<qq", msg[1:]))
            self.conn.send_bytes(_DONE)
        except Exception as e:
            self.error(e)
        return spinning

    def run(self) -> None:
        """Serve until quit, the pipe's end, or the trainer's exit."""
        last = 0  # the last minibatch sequence number handled (spinning)
        spinning = False
        try:
            while True:
                if spinning:
                    last = self.spin(last)
                msg = self.receive()
                if msg is None or msg[:1] == QUIT:
                    return
                spinning = self.handle(msg, spinning)
        except (EOFError, BrokenPipeError, KeyboardInterrupt):
            return
