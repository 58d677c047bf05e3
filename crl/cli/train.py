"""``crl train``: one (env, agent, seed) run.

Its options are the fields of :class:`crl.spec.RunConfig`, one ``--flag`` each (underscores
become dashes), with the fields' own docs as help: a run written as flags and a run written
in Python or in a sweep file are the same thing.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing

from crl.cli.common import add_catalog_arg, integer
from crl.spec import VEC_ENVS, WANDB_MODES, RunConfig, field_docs

HELP = "train one (env, agent, seed) run"

#: RunConfig fields without a flag of their own (``--no-progress`` sets ``progress``).
NOT_FLAGS = ("command", "progress")

#: Fields whose values are ``K=V`` overrides.
OVERRIDES = ("env_kwargs", "agent_kwargs")

CHOICES = {"vec_env": VEC_ENVS, "wandb": WANDB_MODES}


def flag(name: str) -> str:
    """The option of RunConfig field ``name``.

    Example:
        >>> flag("checkpoint_every")
        '--checkpoint-every'
    """
    return "--" + name.replace("_", "-")


def _plain(doc: str) -> str:
    """A field doc as terminal text (no reST roles or literals)."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "").replace("%", "%%")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``crl train``: every RunConfig field, then what only the command line has."""
    docs, hints = field_docs(RunConfig), typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name in NOT_FLAGS:
            continue
        kw: dict[str, typing.Any] = {"help": _plain(docs.get(f.name, "")), "dest": f.name}
        if f.name in OVERRIDES:
            kw.update(nargs="*", default=[], metavar="K=V")
        elif typing.get_origin(hints[f.name]) is list:
            kw.update(nargs="*", default=[], metavar=f.name.upper().removesuffix("S"))
        elif f.default is dataclasses.MISSING:
            kw.update(required=True)
        else:
            kw.update(default=f.default, type=_scalar(hints[f.name]), choices=CHOICES.get(f.name))
        p.add_argument(flag(f.name), **kw)
    p.add_argument("--resume", action="store_true", help="require resuming from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete an existing run folder first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    add_catalog_arg(p)


def _scalar(tp: typing.Any) -> typing.Callable[[str], typing.Any]:
    """The argparse type of a scalar field (``X | None`` reads as X)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    tp = args[0] if args else tp
    return {int: integer, float: float}.get(tp, str)


def config_of(a: argparse.Namespace, command: str = "") -> RunConfig:
    """The RunConfig of parsed ``crl train`` arguments."""
    from crl.config import parse_overrides

    values = {}
    for f in dataclasses.fields(RunConfig):
        if f.name in OVERRIDES:
            values[f.name] = parse_overrides(getattr(a, f.name), flag(f.name))
        elif f.name not in NOT_FLAGS:
            values[f.name] = getattr(a, f.name)
    return RunConfig(**values, progress=not a.no_progress, command=command)


def run(a: argparse.Namespace) -> int:
    """Train the run; print where it is."""
    from crl.errors import ConfigError
    from crl.run import command_line, train

    if a.resume and a.overwrite:
        raise ConfigError("--resume continues a run and --overwrite deletes it first; give one of them")
    result = train(config_of(a, command_line()), resume=True if a.resume else None, overwrite=a.overwrite)
    if result.skipped:
        print(f"already finished: {result.run_dir}")
    else:
        print(f"{result.status} at step {result.global_step:,}: {result.run_dir}")
    return 0
