"""TRAC (Muppidi, Zhang & Wang, NeurIPS 2024): a parameter-free wrapper of a base optimizer.

The parameters are kept at ``theta = theta_ref + S * Delta``: ``theta_ref`` is where
training started, ``Delta`` accumulates the base optimizer's updates, and the scalar
scale ``S = sum_j s_j`` is tuned online, one ``s_j`` per discount ``beta_j``:

* ``h = <Delta_t, g_t>`` (the gradient projected on the accumulated displacement);
* ``v_j <- beta_j^2 v_j + h^2``, ``sigma_j <- beta_j sigma_j - h``;
* ``s_j = s_init / erfi(1 / sqrt 2) * erfi(sigma_j / (sqrt(2 v_j) + eps))``;
* ``theta <- theta_ref + max(S, 0) * (Delta_t + u_t)`` with ``u_t`` the base step.

A small ``S`` pulls the network back towards where it started, which is what keeps it
plastic across "level shifts". Written from the paper and the update rule; checked against
the reference package ``trac-optimizer`` in the tests.
"""

from __future__ import annotations

from typing import Any

import torch
from scipy import special

from crl.errors import ConfigError, check_non_negative

__all__ = ["make_trac", "TRACAdam"]

DEFAULT_BETAS = (0.9, 0.99, 0.999, 0.9999, 0.99999, 0.999999)


def _erfi(x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(special.erfi(x.double().numpy()), dtype=x.dtype)


def make_trac(base: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """A TRAC optimizer class wrapping ``base`` (usable as SB3's ``optimizer_class``).

    Example:
        >>> TRACAdam = make_trac(torch.optim.Adam)
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = TRACAdam([w], lr=0.1, s_init=1e-8)
        >>> (w**2).sum().backward(); opt.step()
        >>> bool(torch.allclose(w, torch.tensor([1.0, -2.0]), atol=1e-6))  # S starts tiny
        True
    """

    class TRAC(base):  # type: ignore[valid-type,misc]
        __doc__ = f"TRAC around {base.__name__}: theta = theta_ref + S * Delta (see :mod:`crl.plasticity.trac`)."

        def __init__(
            self,
            params: Any,
            trac_betas: tuple[float, ...] | list[float] = DEFAULT_BETAS,
            s_init: float = 1e-8,
            trac_eps: float = 1e-8,
            **kwargs: Any,
        ) -> None:
            betas = tuple(float(b) for b in trac_betas)
            if not betas or not all(0.0 <= b < 1.0 for b in betas):
                raise ConfigError(f"trac_betas must be numbers in [0, 1), got {trac_betas!r}")
            s_init = check_non_negative("s_init", s_init, strict=True)
            trac_eps = check_non_negative("trac_eps", trac_eps, strict=True)
            super().__init__(params, **kwargs)
            self.trac_betas, self.s_init, self.trac_eps = betas, s_init, trac_eps
            n = len(betas)
            self.trac: dict[str, Any] = {
                "s": torch.zeros(n),
                "variance": torch.zeros(n),
                "sigma": torch.full((n,), 1e-8),
                "steps": 0,
            }

        @torch.no_grad()
        def step(self, closure: Any = None) -> Any:  # type: ignore[override]
            params = [p for g in self.param_groups for p in g["params"]]
            before = {p: p.detach().clone() for p in params}
            grads = {p: p.grad.detach().clone() for p in params if p.grad is not None}
            with torch.enable_grad():
                result = super().step(closure)
            for p in params:
                st = self.state[p]
                if "trac_ref" not in st:
                    st["trac_ref"] = before[p].clone()
            t = self.trac
            scale_before = t["s"].sum() + self.trac_eps  # float32, like the parameters
            h = torch.zeros((), dtype=torch.float32)
            deltas = {}
            for p in params:
                if p not in grads:
                    continue
                delta = (before[p] - self.state[p]["trac_ref"]) / scale_before
                h = h + torch.dot(delta.flatten().float(), grads[p].flatten().float())
                deltas[p] = delta + (p.detach() - before[p])  # Delta_t + u_t
            if not torch.isfinite(h):
                raise FloatingPointError("TRAC: non-finite <Delta, g>")
            betas = torch.tensor(self.trac_betas)
            t["variance"].mul_(betas**2).add_(h**2)
            t["sigma"].mul_(betas).sub_(h)
            sqrt2 = torch.sqrt(torch.tensor(2.0))
            scale = torch.tensor(self.s_init) / _erfi(torch.tensor(1.0) / sqrt2)
            t["s"].copy_(scale * _erfi(t["sigma"] / (sqrt2 * t["variance"].sqrt() + self.trac_eps)))
            t["steps"] += 1
            s_sum = t["s"].sum().clamp(min=0.0)
            for p, delta in deltas.items():
                p.copy_(self.state[p]["trac_ref"] + delta * s_sum)
            return result

        def metrics(self) -> dict[str, float]:
            """What a run logs after every update (``optimizer/<net>/trac_scale``): the scale
            ``S = max(0, sum_i s_i)`` now applied to the distance from the reference point.
            """
            return {"trac_scale": float(self.trac["s"].sum().clamp(min=0.0))}

        def state_dict(self) -> dict[str, Any]:
            sd = super().state_dict()
            sd["trac"] = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in self.trac.items()}
            return sd

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            state_dict = dict(state_dict)
            trac = state_dict.pop("trac", None)
            super().load_state_dict(state_dict)
            if trac is not None:
                self.trac = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in trac.items()}

    TRAC.__name__ = TRAC.__qualname__ = f"TRAC{base.__name__}"
    return TRAC


#: TRAC around Adam, the configuration of the TRAC paper's PPO experiments.
TRACAdam = make_trac(torch.optim.Adam)
