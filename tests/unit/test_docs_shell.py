"""Every shell block of the README, CONTRIBUTING and the manual is checked against what
the project really offers: it parses as bash, every `make` target it names exists, and
every `mlcycle` command line it shows is accepted by the CLI's own parser (command,
options, their values), so a renamed flag or command cannot survive in the docs. A block
whose commands need a cluster, a broker or a running server says so with a marker the
line before it: `<!-- needs: cluster -->` (also checked, never run)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer
from typer import _click as click  # Typer's own click (it no longer uses the package)

from mlcycle.cli import app
from tests.servers import REPO

FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")
NEEDS = re.compile(r"^<!-- needs: ([a-z, ]+) -->$")
OUTSIDE = {"dask", "curl", "docker", "kubectl", "helm"}
"""Commands that need something beside the project: a block with one carries a marker."""
KNOWN_NEEDS = {"cluster", "kafka", "server", "docker", "network"}


def _pages() -> list[Path]:
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]


def _blocks() -> list[tuple[str, int, str, str | None]]:
    """(page, line, text, needs) of every shell block."""
    found = []
    for page in _pages():
        lines = page.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            if FENCE.match(lines[i].strip()):
                start = i
                i += 1
                body = []
                while i < len(lines) and lines[i].strip() != "```":
                    body.append(lines[i])
                    i += 1
                before = lines[start - 1].strip() if start else ""
                marker = NEEDS.match(before)
                found.append(
                    (
                        str(page.relative_to(REPO)),
                        start + 1,
                        "\n".join(body),
                        marker.group(1) if marker else None,
                    )
                )
            i += 1
    return found


BLOCKS = _blocks()


def _commands(text: str) -> list[list[str]]:
    """Each simple command of a block as words (comments dropped, `&&`, `;`, `|` and a
    trailing `&` split, continuation lines joined)."""
    joined = _uncommented(re.sub(r"\\\n", " ", text))
    lexer = shlex.shlex(joined, posix=True, punctuation_chars=";&|\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""  # (shlex's comments would swallow the newline that ends them)
    out: list[list[str]] = []
    words: list[str] = []
    for token in lexer:
        if set(token) <= set(";&|\n"):
            if words:
                out.append(words)
            words = []
        else:
            words.append(token)
    if words:
        out.append(words)
    return out


def _uncommented(text: str) -> str:
    """The text without its comments (a `#` at a word's start, outside quotes, to the end
    of its line); quotes may span lines."""
    out: list[str] = []
    quote: str | None = None
    skipping = False
    for i, ch in enumerate(text):
        if skipping:
            skipping = ch != "\n"
            if ch == "\n":
                out.append(ch)
            continue
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t\n"):
            skipping = True
            continue
        out.append(ch)
    return "".join(out)


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    targets: set[str] = set()
    for match in re.finditer(r"^([a-z][a-z0-9 -]*):", text, re.M):
        targets.update(match.group(1).split())
    return targets


def test_the_docs_have_shell_blocks_and_each_marker_is_known() -> None:
    assert len(BLOCKS) >= 10
    for page, line, _, needs in BLOCKS:
        if needs is not None:
            unknown = {n.strip() for n in needs.split(",")} - KNOWN_NEEDS
            assert not unknown, f"{page}:{line}: unknown needs {unknown}"


@pytest.mark.parametrize(("page", "line", "text", "needs"), BLOCKS, ids=lambda v: str(v)[:40])
def test_a_shell_block_says_only_what_the_project_offers(
    page: str, line: int, text: str, needs: str | None
) -> None:
    where = f"{page}:{line}"
    syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert syntax.returncode == 0, f"{where}: {syntax.stderr}"
    cli = typer.main.get_command(app)
    targets = _make_targets()
    outside = [
        w
        for w in _commands(text)
        if w[0] in OUTSIDE or w[:2] in (["make", "kafka-start"], ["make", "up"])
    ]
    assert needs or not outside, f"{where}: {outside[0]} needs a `<!-- needs: ... -->` marker"
    for words in _commands(text):
        if words[0] == "make":
            named = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
            assert set(named) <= targets, f"{where}: no make target {set(named) - targets}"
        elif words[0] == "mlcycle":
            _parses(cli, words[1:], where)


def _parses(cli: click.Command, args: list[str], where: str) -> None:
    """The CLI's parser takes the line (command, options, values) without running it."""
    if args and args[0].startswith("--"):  # app options (--version, --show-completion)
        assert args[0] in {p for o in cli.params for p in o.opts}, f"{where}: {args[0]}"
        return
    assert args, f"{where}: `mlcycle` alone"
    command = cli.get_command(click.Context(cli), args[0])
    assert command is not None, f"{where}: no command `mlcycle {args[0]}`"
    try:
        command.make_context(args[0], list(args[1:]), parent=click.Context(cli))
    except click.ClickException as err:
        pytest.fail(f"{where}: `mlcycle {' '.join(args)}`: {err.format_message()}")


def test_the_checker_catches_a_renamed_flag_and_a_missing_target() -> None:
    cli = typer.main.get_command(app)
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        _parses(cli, ["train", "--agian"], "x")
    with pytest.raises(AssertionError, match="no command"):
        _parses(cli, ["trian"], "x")
    assert "benchmark-page" in _make_targets() and "nonsense" not in _make_targets()
    assert _commands("a --x 1 && b | c # d\nmake run") == [
        ["a", "--x", "1"],
        ["b"],
        ["c"],
        ["make", "run"],
    ]


def test_a_block_that_needs_a_cluster_must_say_so() -> None:
    with pytest.raises(AssertionError, match="needs a"):
        test_a_shell_block_says_only_what_the_project_offers(
            "x.md", 1, "dask scheduler --host 127.0.0.1 &", None
        )
    test_a_shell_block_says_only_what_the_project_offers(
        "x.md", 1, "dask scheduler --host 127.0.0.1 &", "cluster"
    )
    with pytest.raises(AssertionError, match="no make target"):
        test_a_shell_block_says_only_what_the_project_offers("x.md", 1, "make tset", None)
