"""crl's callbacks one by one, on scripted ``infos`` with hand-computed rows."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch

from crl.run.callbacks import Checkpointer, CrlCallbacks, LossLogger, RegimeLogger, RegimeSummary


class Sink:
    def __init__(self):
        self.rows, self.summaries = [], {}

    def log(self, step, row):
        self.rows.append((step, dict(row)))

    def summary(self, values):
        self.summaries.update(values)


def _model(n_envs=1, n_updates=0, values=None):
    return SimpleNamespace(
        get_env=lambda: SimpleNamespace(num_envs=n_envs),
        logger=SimpleNamespace(name_to_value=dict(values or {})),
        num_timesteps=0,
        _n_updates=n_updates,
    )


def _step(cb, model, step, infos):
    model.num_timesteps = step
    cb.update_locals({"infos": infos})
    cb.on_step()


def _info(regime, friction, episode=None, change=False):
    out = {"regime": regime, "drift/friction": friction}
    if episode is not None:
        out["episode"] = {"r": episode, "l": 10}
    if change:
        out["regime_change"] = True
    return out


def test_regime_logger_opens_each_segment_once_across_envs(tmp_path):
    sink, seen = Sink(), []
    cb = RegimeLogger(sink, tmp_path / "regimes.csv", on_regime_change=[seen.append], last_frac=0.5)
    model = _model(n_envs=2)
    cb.init_callback(model)
    _step(cb, model, 2, [_info(0, 1.0), _info(0, 1.0)])
    _step(cb, model, 4, [_info(0, 1.0, episode=5.0), _info(0, 1.0, episode=7.0, change=True)])
    _step(cb, model, 6, [_info(0, 1.0, change=True), _info(1, 0.5)])  # env 1 opens segment 1 at step 4
    _step(cb, model, 8, [_info(1, 0.5, episode=2.0), _info(1, 0.5)])
    cb.on_training_end()

    assert seen == [1]  # the listener hears the new segment once
    assert [(r["segment"], r["regime"], r["start_step"], r["end_step"], r["friction"]) for r in cb.regimes] == [
        (0, 0, 0, 4, 1.0),
        (1, 1, 4, None, 0.5),  # still open: the run may be extended
    ]
    assert cb.regimes[0]["episodes"] == 2 and cb.regimes[0]["final_return"] == 6.0  # both in the last half
    assert cb.regimes[1]["steps_to_reach"] is None  # 2.0 never reaches 90 % of 6.0
    episodes = [
        (s, r["charts/episodic_return"], r["regime/segment"]) for s, r in sink.rows if "charts/episodic_return" in r
    ]
    assert episodes == [(4, 5.0, 0), (4, 7.0, 0), (8, 2.0, 1)]
    assert (4, {"regime/boundary": 1, "regime/index": 1}) in sink.rows
    assert sink.summaries["regime_0/final_return"] == 6.0
    with (tmp_path / "regimes.csv").open() as f:
        assert [r["segment"] for r in csv.DictReader(f)] == ["0", "1"]


def test_regime_logger_state_resumes_the_same_rows(tmp_path):
    def run(cut):
        sink = Sink()
        cb = RegimeLogger(sink, None)
        model = _model()
        cb.init_callback(model)
        script = [(2, _info(0, 1.0, episode=1.0, change=True)), (4, _info(2, 3.0)), (6, _info(2, 3.0, episode=4.0))]
        for i, (step, info) in enumerate(script):
            if i == cut:
                state = cb.get_state()
                cb = RegimeLogger(sink, None)
                cb.set_state(state)
                cb.init_callback(model)
            _step(cb, model, step, [info])
        return sink.rows, cb.regimes

    assert run(cut=1) == run(cut=None)


def test_regime_summary_steps_to_reach():
    s = RegimeSummary(last_frac=0.5, reach_frac=0.9)
    s.add(5, 0, 10.0)
    assert s.close(0, 0, 10)["final_return"] == 10.0
    s.add(12, 1, 5.0)
    s.add(17, 1, 9.5)  # >= 10 - 0.1 * 10
    assert s.close(1, 10, 20)["steps_to_reach"] == 7


def test_loss_logger_writes_a_row_per_update_only():
    sink = Sink()
    model = _model(values={"train/value_loss": 0.5, "train/n_updates": 1})
    cb = LossLogger(sink)
    cb.init_callback(model)
    cb.on_training_start({}, {})
    model.num_timesteps = 10
    cb.on_step()
    cb.on_rollout_start()
    cb.on_rollout_start()  # no new update: no row
    model._n_updates = 1
    cb.on_rollout_start()
    assert [s for s, _ in sink.rows] == [10, 10]
    assert sink.rows[0][1]["losses/value_loss"] == 0.5 and "time/sps" in sink.rows[0][1]


def test_checkpointer_saves_at_the_first_boundary_past_the_interval():
    saved = []
    model = _model()
    cb = Checkpointer(100, lambda: saved.append(model.num_timesteps))
    cb.init_callback(model)
    for step in (64, 128, 192, 256):
        model.num_timesteps = step
        cb.on_step()
        cb.on_rollout_start()
    assert saved == [128, 256] and cb.get_state() == {"last": 256}


def test_callback_set_state_reaches_each_named_part():
    a, b = Checkpointer(10, lambda: None), Checkpointer(10, lambda: None)
    cbs = CrlCallbacks({"a": a, "b": b}, Sink())
    cbs.set_state({"a": {"last": 5}, "b": {"last": 7}})
    assert cbs.get_state() == {"a": {"last": 5}, "b": {"last": 7}}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_guard_stops_on_a_non_finite_loss(bad):
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import Logger

    from crl.errors import NonFiniteLossError
    from crl.run.callbacks import NanGuard

    model = PPO("MlpPolicy", gym.make("CartPole-v1"), n_steps=64, batch_size=64, n_epochs=1)
    model.set_logger(Logger(folder=None, output_formats=[]))
    guard = NanGuard()
    guard.init_callback(model)
    model.logger.record("train/loss", bad)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        guard.check()


@pytest.mark.parametrize("every", [1, 1000])
def test_nan_guard_looks_at_the_parameters_every_param_every_steps(every):
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import Logger

    from crl.errors import NonFiniteLossError
    from crl.run.callbacks import NanGuard

    model = SAC("MlpPolicy", gym.make("Pendulum-v1"))
    model.set_logger(Logger(folder=None, output_formats=[]))
    guard = NanGuard(param_every=every)
    guard.init_callback(model)
    guard.on_rollout_start()  # step 0: looked, fine
    with torch.no_grad():
        model.critic_target.qf1[2].bias[0] = float("inf")
    for step in (1, 500, 999):
        model.num_timesteps = step
        guard.on_step()  # as SB3 calls it after each env step
        if every == 1:
            with pytest.raises(NonFiniteLossError, match=f"non-finite parameter at global step {step}"):
                guard.on_rollout_start()
            return
        guard.on_rollout_start()  # not looked at yet
    model.num_timesteps = 1000
    guard.on_step()
    with pytest.raises(NonFiniteLossError, match="non-finite parameter at global step 1000"):
        guard.on_rollout_start()
    with pytest.raises(NonFiniteLossError, match="non-finite parameter"):
        guard.check()  # the end's check looks at once
    with pytest.raises(ValueError, match="param_every must be a whole number of env steps >= 1, got 0"):
        NanGuard(param_every=0)


def test_regimes_csv_has_the_summary_columns_whatever_the_segments_saw(tmp_path):
    """A segment without episodes (or a run stopped in its first segment) still writes every
    summary column, so every run's regimes.csv has the same columns."""
    import csv

    from crl.run.callbacks.regimes import SUMMARY_COLUMNS, write_regimes_csv

    short = [{"segment": 0, "regime": 0, "start_step": 0, "end_step": None, "friction": 0.5}]
    full = [
        {"segment": 0, "regime": 0, "start_step": 0, "end_step": 10, "friction": 0.5, "episodes": 0},
        {"segment": 1, "regime": 1, "start_step": 10, "end_step": None, "friction": 0.2},
    ]
    headers = []
    for name, rows in (("a.csv", short), ("b.csv", full)):
        write_regimes_csv(tmp_path / name, rows)
        with (tmp_path / name).open() as f:
            headers.append(next(csv.reader(f)))
    assert headers[0] == headers[1]
    assert headers[0][-len(SUMMARY_COLUMNS) :] == SUMMARY_COLUMNS and headers[0][4] == "friction"


def test_loss_logger_logs_trac_scale_after_every_update_of_a_real_run():
    """TRAC's scale S (the optimizer's own value after the update) beside the update's KL."""
    import gymnasium as gym

    from crl import make_agent

    model = make_agent("ppo-trac", gym.make("CartPole-v1"), seed=3, n_steps=64, batch_size=32, n_epochs=2)
    sink = Sink()
    logged = []

    class Probe(LossLogger):
        def log_losses(self):
            before = len(sink.rows)
            super().log_losses()
            if len(sink.rows) > before:
                logged.append(self.model.policy.optimizer.metrics()["trac_scale"])

    model.learn(256, callback=Probe(sink))
    rows = [r for _, r in sink.rows]
    assert len(rows) == 4 and all("losses/approx_kl" in r for r in rows)
    assert [r["optimizer/policy/trac_scale"] for r in rows] == logged
    assert len(set(logged)) > 1 and min(logged) >= 0.0
