"""Every code block of README.md and docs/*.md is run or checked, so the docs cannot go stale.

- ``python`` blocks run in a temporary folder, with their step counts cut to ``SMALL``
  (``.learn(20_000`` and ``steps=4096`` become 512). A block whose first line names a file
  (``# mypkg/envs.py``) is written to that file instead, for the shell commands of its page.
- ``yaml`` blocks: sweep files are loaded by ``crl.sweep.load_sweep``; a block whose first line
  names a file (``# my-catalog/envs/icy-hopper.yaml``) is written there for its page's commands.
- ``bash`` blocks pass ``bash -n``; every ``crl`` command in them is parsed by crl's own argument
  parser (catalog names checked against envs/ and agents/, files against the repository),
  ``make`` targets must exist in the Makefile, ``pip`` lines must match the Makefile and
  pyproject.toml. The cheap commands also run (``RUN``): ``crl train`` after its page's file
  blocks (cut to a few hundred steps) and ``crl sweep FILE --dry-run``.
- ``text`` blocks are output and trees, never commands.

A block opts out of checks it cannot pass only with ``# doc-test: skip REASON (why)`` on its
first line, REASON one of ``SKIP_REASONS``, each with a check that the block is what it claims.

Blocks that use the public API of issue 21 (``crl.make_agent``, ``crl.callbacks``,
``crl.train``/``crl.RunConfig`` with callbacks, ``crl.diagnostics.register_diagnostic``,
``crl train --env module:EnvId``) fail with a message saying so until that API lands.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGS = {"python", "bash", "yaml", "text"}
SMALL = 512
NEW_API = re.compile(
    r"crl\.(make_agent|callbacks|train|RunConfig)\b|register_diagnostic|from crl\.diagnostics import DIAGNOSTICS"
    r"|--env \S+\.\S+:\S+"
)
MARKER = re.compile(r"#\s*doc-test:\s*skip\s+(\S+)\s*\((.+)\)\s*$")
FILE_LINE = re.compile(r"#\s*([\w.-]+(?:/[\w.-]+)+\.(?:py|ya?ml))\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def first(self) -> str:
        return self.code.split("\n", 1)[0]

    @property
    def marker(self) -> tuple[str, str] | None:
        m = MARKER.match(self.first)
        return (m.group(1), m.group(2)) if m else None

    @property
    def file_name(self) -> str | None:
        m = FILE_LINE.match(self.first)
        return m.group(1) if m else None

    @property
    def new_api(self) -> list[str]:
        return sorted({m.group(0) for m in NEW_API.finditer(self.code)})


def _blocks(page: Path) -> list[Block]:
    out, lines, i = [], page.read_text().split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        assert not m.group(1), f"{page.name}:{i + 1}: indented code fence"
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        out.append(Block(page, i + 1, m.group(2), "\n".join(lines[i + 1 : end]) + "\n"))
        i = end + 1
    return out


BLOCKS = [b for page in DOCS for b in _blocks(page)]


def _ids(blocks: list[Block]) -> list[str]:
    return [f"{b.where}-{b.lang}" for b in blocks]


def _fail(block: Block, error: str) -> None:
    if block.new_api:
        pytest.fail(
            f"{block.where}: waits for issue 21's public API ({', '.join(block.new_api)}), "
            f"not on this branch yet: {error}",
            pytrace=False,
        )
    pytest.fail(f"{block.where}: {error}", pytrace=False)


# -- what a block is ---------------------------------------------------------------------------
SKIP_REASONS: dict[str, Callable[[Block], bool]] = {
    # the loopback Ray recipe: needs root or user namespaces; tests/test_sweep.py runs it
    "network-namespace": lambda b: (
        "unshare -n" in b.code and "unshare" in (ROOT / "tests" / "test_sweep.py").read_text()
    ),
}


def test_every_page_has_code_blocks_and_every_block_a_known_language():
    assert len(DOCS) > 5 and len(BLOCKS) > 20
    for b in BLOCKS:
        assert b.lang in LANGS, f"{b.where}: code block language {b.lang!r}; use one of {sorted(LANGS)}"


def test_skip_markers_are_justified():
    for b in BLOCKS:
        if "doc-test" in b.code and b.marker is None:
            pytest.fail(f"{b.where}: malformed marker; write '# doc-test: skip REASON (why)' on the first line")
        if b.marker:
            reason, why = b.marker
            assert reason in SKIP_REASONS, f"{b.where}: unknown skip reason {reason!r}; known: {sorted(SKIP_REASONS)}"
            assert why.strip() and SKIP_REASONS[reason](b), f"{b.where}: the block is not what {reason!r} says"


def test_text_blocks_hold_no_commands():
    for b in BLOCKS:
        if b.lang != "text":
            continue
        for line in b.code.splitlines():
            # a usage synopsis (crl metrics RUN_DIR [--frac F]) is fine; a runnable command is not
            if re.match(r"^\s*(crl|python|make|pip)\s", line) and "[" not in line:
                pytest.fail(f"{b.where}: command {line.strip()!r} in a text block; make it a bash block")


def test_file_blocks_are_used_by_a_command_of_their_page():
    for b in BLOCKS:
        if not b.file_name:
            continue
        top = b.file_name.split("/")[0]
        used = [c for c in BLOCKS if c.page == b.page and c.lang == "bash" and top in c.code]
        assert used, f"{b.where}: file block {b.file_name} is used by no command of its page"


# -- python ------------------------------------------------------------------------------------
def _shrink(code: str) -> str:
    def small(m: re.Match) -> str:
        n = int(m.group(2).replace("_", ""))
        return m.group(1) + (str(SMALL) if n > SMALL else m.group(2))

    code = re.sub(r"(\.learn\(\s*)([\d_]+)", small, code)
    return re.sub(r"(\bsteps=)([\d_]+)", small, code)


def _after_clip_features(scope: dict, tmp: Path, out: str) -> None:
    assert scope["interventions"].interventions[0].clipped > 0


def _after_make_agent(scope: dict, tmp: Path, out: str) -> None:
    assert any((tmp / "runs" / "my-script").iterdir()), "crl.callbacks wrote nothing"


def _after_diagnostic(scope: dict, tmp: Path, out: str) -> None:
    assert {"max_feature", "max_abs_weight"} <= set(scope["DIAGNOSTICS"])


def _after_regime_printer(scope: dict, tmp: Path, out: str) -> None:
    assert "regime" in out


#: checks after a block ran: (text the block contains, check)
AFTER: list[tuple[str, Callable[[dict, Path, str], None]]] = [
    ("class ClipFeatures", _after_clip_features),
    ('crl.callbacks("runs/my-script")', _after_make_agent),
    ("register_diagnostic(", _after_diagnostic),
    ("class RegimePrinter", _after_regime_printer),
]

PYTHON = [b for b in BLOCKS if b.lang == "python" and not b.file_name and not b.marker]


@pytest.fixture
def registries():
    """crl's registries as they were before a block ran (a block that registers a diagnostic,
    intervention, drift or schedule must not leak it into the tests that follow in this process)."""
    from crl.diagnostics.registry import DIAGNOSTICS
    from crl.drift.registration import DRIFTS
    from crl.drift.schedules import SCHEDULES
    from crl.plasticity.base import INTERVENTIONS

    saved = [(r, dict(r)) for r in (DIAGNOSTICS, DRIFTS, SCHEDULES, INTERVENTIONS)]
    yield
    for registry, before in saved:
        registry.clear()
        registry.update(before)


@pytest.mark.parametrize("block", PYTHON, ids=_ids(PYTHON))
def test_python_block_runs(block: Block, tmp_path, monkeypatch, capsys, registries):
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__doc_block__"}
    error = None
    try:
        exec(compile(_shrink(block.code), block.where, "exec"), scope)
        out = capsys.readouterr().out
        for needle, check in AFTER:
            if needle in block.code:
                check(scope, tmp_path, out)
    except Exception as e:  # reported below with the block's place
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}"
    if error:
        _fail(block, error)


# -- yaml --------------------------------------------------------------------------------------
SWEEPS = [b for b in BLOCKS if b.lang == "yaml" and not b.file_name]


@pytest.mark.parametrize("block", SWEEPS, ids=_ids(SWEEPS))
def test_sweep_file_block_loads(block: Block, tmp_path):
    from crl.sweep import expand, load_sweep

    assert "envs:" in block.code and "agents:" in block.code, f"{block.where}: a YAML block is a sweep or a file"
    path = tmp_path / "sweep.yaml"
    path.write_text(block.code)
    spec = load_sweep(path)
    assert expand(spec, str(tmp_path / "runs")), f"{block.where}: an empty grid"


# -- bash: parsed ------------------------------------------------------------------------------
def _commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [c for c in (shlex.join(shlex.split(line, comments=True)) for line in joined.splitlines()) if c]


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    while words and re.match(r"^[A-Z_]+=", words[0]):  # PYTHONPATH=. python ...
        words = words[1:]
    return words


def _crl_args(words: list[str]) -> list[str] | None:
    if words[:1] == ["crl"]:
        return words[1:]
    if words[:3] == ["python", "-m", "crl"]:
        return words[3:]
    return None


def _parse_crl(block: Block, args: list[str]) -> None:
    from crl.cli import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"{block.where}: `crl {shlex.join(args)}` does not parse: {err.getvalue().strip()}", pytrace=False)
    agents = {p.stem for p in (ROOT / "agents").glob("*.yaml")}
    envs = {p.stem for p in (ROOT / "envs").glob("*.yaml")}
    names = getattr(ns, "agent", None)
    for name in names if isinstance(names, list) else [names] if names else []:
        name = name.split(":")[0]
        if "/" not in name and not name.endswith(".yaml"):
            assert name in agents, f"{block.where}: no agent {name!r} in agents/"
    env = getattr(ns, "env", None)
    if isinstance(env, str) and not re.search(r"[/:]|\.yaml$", env) and not getattr(ns, "catalog", None):
        assert env in envs, f"{block.where}: no env {env!r} in envs/"
    if ns.command == "sweep":
        assert (ROOT / ns.file).exists(), f"{block.where}: no sweep file {ns.file}"


def _check_command(block: Block, command: str) -> None:
    words = _argv(command)
    args = _crl_args(words)
    if args is not None:
        _parse_crl(block, args)
    elif words[0] == "make":
        targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
        assert set(words[1:]) <= targets, f"{block.where}: make targets {words[1:]}; the Makefile has {targets}"
    elif words[:2] == ["pip", "install"]:
        pins = set(re.findall(r'"(torch==[\d.]+)"', (ROOT / "Makefile").read_text()))
        pyproject = (ROOT / "pyproject.toml").read_text()
        for w in words[2:]:
            if w.startswith("torch"):
                assert w in pins, f"{block.where}: {w}; the Makefile installs {pins}"
            for extra in re.findall(r"\[(\w+)\]", w):
                assert re.search(rf"^{extra} = \[", pyproject, re.M), f"{block.where}: no extra [{extra}]"
    elif words[0] == "python" and words[1].endswith(".py"):
        assert (ROOT / words[1]).exists(), f"{block.where}: no script {words[1]}"
    else:
        pytest.fail(f"{block.where}: cannot check `{command}`; run it in tests/test_docs.py or mark the block")


BASH = [b for b in BLOCKS if b.lang == "bash"]


@pytest.mark.parametrize("block", BASH, ids=_ids(BASH))
def test_shell_block_parses(block: Block):
    proc = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
    assert proc.returncode == 0, f"{block.where}: bash -n: {proc.stderr}"
    if block.marker:  # only its crl commands can be checked
        for m in re.finditer(r"(?:^|\s)(?:python -m )?crl (\w[^\n']*)", block.code):
            _parse_crl(block, shlex.split(m.group(1), comments=True))
        return
    for command in _commands(block.code):
        _check_command(block, command)


# -- bash: run ---------------------------------------------------------------------------------
QUICK_RUN = [
    "--agent-kwargs",
    "n_steps=256",
    "batch_size=64",
    "n_epochs=1",
    "--env-kwargs",
    "change_every=200",
    "--wandb",
    "disabled",
    "--no-progress",
]


def _runnable(block: Block, command: str) -> bool:
    """Cheap enough to run: a sweep's dry run, or a train command that uses its page's files."""
    words = _argv(command)
    if words[:2] == ["crl", "sweep"]:
        return "--dry-run" in words
    files = [f.file_name.split("/")[0] for f in BLOCKS if f.page == block.page and f.file_name]
    return words[:2] == ["crl", "train"] and any(top in command for top in files)


def _runs() -> list[tuple[Block, str]]:
    return [(b, c) for b in BASH if not b.marker for c in _commands(b.code) if _runnable(b, c)]


RUN = _runs()


@pytest.mark.parametrize(("block", "command"), RUN, ids=[f"{b.where}-{c[:40]}" for b, c in RUN])
def test_cheap_shell_command_runs(block: Block, command: str, tmp_path, crl_cli):
    args = _argv(command)[1:]
    if args[0] == "train":
        for f in BLOCKS:  # the page's files, where the command expects them
            if f.page == block.page and f.file_name:
                (tmp_path / f.file_name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / f.file_name).write_text(f.code)
        if "--steps" in args:
            args[args.index("--steps") + 1] = str(SMALL)
        args += QUICK_RUN
    args += ["--run-dir", str(tmp_path / "runs")]
    cwd = tmp_path if args[0] == "train" else ROOT
    proc = crl_cli(*args, cwd=cwd, env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    if proc.returncode != 0:
        _fail(block, f"`crl {shlex.join(args)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    if args[0] == "train":
        assert "finished" in proc.stdout, proc.stdout
        (run,) = (tmp_path / "runs" / "default").iterdir()
        assert (run / "regimes.csv").read_text().count("\n") >= 2, f"{block.where}: no regime change logged"
        if "icy-hopper" in command:
            header = (run / "metrics.csv").read_text().splitlines()[0]
            assert "regime/friction" in header and "regime/mass_scale" in header
    else:
        assert re.search(r"\d+ runs: ", proc.stdout), proc.stdout


def test_the_docs_run_the_commands_they_show():
    """The run list is not empty by accident (a renamed file block would empty it)."""
    assert any("icy-hopper" in c for _, c in RUN) and any("--dry-run" in c for _, c in RUN)
    assert any("mypkg.envs:" in c for _, c in RUN)
