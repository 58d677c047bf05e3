"""Arguments shared by several commands."""

from __future__ import annotations

import argparse

__all__ = ["add_run_args", "add_catalog_arg"]


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
