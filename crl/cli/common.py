"""Arguments shared by several commands."""

from __future__ import annotations

import argparse
import math
import typing

__all__ = ["OneLineParser", "add_run_args", "add_catalog_arg", "integer"]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``crl train: error: ...``), exit status 2,
    like every other error of ``crl``: the usage is a ``--help`` away, not printed above it.
    """

    def error(self, message: str) -> typing.NoReturn:
        """Print ``message`` on one line and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def integer(text: str) -> int:
    """An integer option: ``100000``, ``100_000`` or ``1e5`` (an integral number in exponent
    form, as step counts are written); the range is checked with the rest of the config.

    Example:
        >>> integer("1e5"), integer("100_000"), integer("-3")
        (100000, 100000, -3)
        >>> integer("1.5")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected an integer (100000, 100_000 or 1e5), got '1.5'
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value.is_integer() and "e" in text.lower():
        return int(value)
    raise argparse.ArgumentTypeError(f"expected an integer (100000, 100_000 or 1e5), got {text!r}")


def add_catalog_arg(p: argparse.ArgumentParser) -> None:
    """``--catalog DIR`` (repeatable): extra catalog folders with envs/ and agents/."""
    p.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="DIR",
        help="extra catalog folder with envs/ and agents/ (also: CRL_CATALOG)",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    """``--run-dir``, ``--wandb`` and ``--catalog``: where runs go and how they are tracked."""
    p.add_argument("--run-dir", default="runs", help="root folder of the outputs (default: runs)")
    p.add_argument(
        "--wandb",
        choices=["auto", "offline", "online", "disabled"],
        default=None,
        help="wandb mode (default: offline unless wandb is configured)",
    )
    add_catalog_arg(p)
