"""The README is the first screen a newcomer needs: short, true, and every link leads somewhere.

Its code blocks, and those of docs/*.md, run in tests/test_docs.py.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_is_under_15_kb():
    assert len(README.encode()) < 15_000, f"README.md is {len(README.encode())} bytes; move detail to docs/"


def test_readme_has_the_two_commands_the_report_and_a_figure():
    assert "make quickstart" in README and "make test" in README
    assert "runs/quickstart/report/index.html" in README
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", README)
    assert figures and all((ROOT / f).is_file() for f in figures)
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    assert {"quickstart", "test", "lint"} <= targets


def test_make_test_lints_before_the_tests():
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: lint\b", make, re.M), "make test must depend on the lint target"
    lint = make[make.index("\nlint:") :]
    assert "ruff check $(LINT_PATHS)" in lint and "ruff format --check $(LINT_PATHS)" in lint
    assert re.search(r"^LINT_PATHS := crl tests benchmarks$", make, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and '"$rc" -eq 5' in ci


def test_names_in_the_readme_exist():
    from crl.cli import build_parser

    agents = {p.stem for p in (ROOT / "agents").glob("*.yaml")}
    envs = {p.stem for p in (ROOT / "envs").glob("*.yaml")}
    ids = set(re.findall(r"^id: (\S+)$", "".join(p.read_text() for p in (ROOT / "envs").glob("*.yaml")), re.M))
    for word in re.findall(r"`([^`\n]+)`", README):
        if re.fullmatch(r"(ppo|sac)(-[a-z0-9-]+)?", word):
            assert word in agents, f"README names agent {word!r}, not in agents/"
        elif re.fullmatch(r"(slippery|level-shift|gravity|mass|cyclic)-[a-z0-9-]+", word):
            assert word in envs, f"README names env {word!r}, not in envs/"
        elif re.fullmatch(r"level-shift-\{[a-z0-9,]+\}", word):
            for part in word[len("level-shift-{") : -1].split(","):
                assert f"level-shift-{part}" in envs, f"README names env level-shift-{part}, not in envs/"
        elif re.fullmatch(r"crl/\w+-v\d+", word):
            assert word in ids, f"README names env id {word!r}, not in envs/"
        elif m := re.fullmatch(r"crl ([a-z]+)", word):
            assert _is_command(build_parser(), m.group(1)), f"README names command {word!r}, not a crl command"
    # every catalog agent and env is in the README's table
    for name in agents | envs:
        covered = name in README or re.sub(r"^level-shift-(\w+)$", "level-shift-{", name) in README
        assert covered, f"{name} is missing from the README's table"


def _is_command(parser, name: str) -> bool:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args([name, "--help"])
    except SystemExit:
        pass
    return "invalid choice" not in err.getvalue()


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a page."""
    out = set()
    for heading in re.findall(r"^#+ (.+)$", page.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_relative_link_and_anchor_resolves():
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"https?://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.exists(), f"{page.relative_to(ROOT)}: broken link {target}"
            if anchor:
                assert anchor in _anchors(dest), (
                    f"{page.relative_to(ROOT)}: no heading #{anchor} in {path or page.name}"
                )


def test_docs_index_links_every_page():
    index = (ROOT / "docs" / "index.md").read_text()
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/index.md does not link {page.name}"
