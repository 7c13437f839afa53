"""The docs cannot go stale silently: README.md, the guide (docs/*.md) and the engine's
README are checked against the repository and the real binary.

- every relative link resolves, and every `#anchor` into a Markdown file names one of its
  headings (GitHub's slugs);
- every flag the docs give a `holdup` subcommand (in code blocks and code spans) exists in
  the CLI, as `holdup <subcommand> --help` of the built binary (``HOLDUP_BIN``) says;
- docs/configuration.md names every flag and environment variable of every subcommand, each
  in its subcommand's section, and nothing else;
- every grpcurl command of the README runs against a real `holdup serve` on a random loopback
  port and answers; the walk's claims (the bystander waits, says so, and names the call that
  held the worker) hold; the grpcurl commands of the guide answer too;
- the README's two commands are the ones CI runs, and its three lines for your own service
  are the ones the engine's README compiles as doctests.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import pytest

from conftest import REPO, START_TIMEOUT_S, _holdup_bin, _server_env, _Server

README = REPO / "README.md"
GUIDE = sorted((REPO / "docs").glob("*.md"))
ENGINE_README = REPO / "crates" / "holdup-diagnose" / "README.md"
DOCS = [README, *GUIDE, ENGINE_README]
CONFIGURATION = REPO / "docs" / "configuration.md"

# The address every grpcurl example in the docs is written for.
DOC_ADDRESS = "127.0.0.1:50051"

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


# ------------------------------------------------------------------ Markdown, read simply


def blocks(path: Path):
    """(in_code_block, line_number, line) for every line of a Markdown file."""
    inside = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            yield True, number, line
            continue
        yield inside, number, line


def code_blocks(path: Path) -> list[list[tuple[int, str]]]:
    """The fenced code blocks of a file: each a list of (line number, line)."""
    found: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            if current is None:
                current = []
            else:
                found.append(current)
                current = None
        elif current is not None:
            current.append((number, line))
    return found


def code_spans(line: str) -> list[str]:
    return [m.group(2).strip() for m in CODE_SPAN.finditer(line)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation dropped
    (letters, digits, spaces, hyphens and underscores kept), spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for in_code, _, line in blocks(path):
        match = None if in_code else HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return frozenset(out)


# ------------------------------------------------------------------ links


def test_the_guide_exists_with_a_table_of_contents():
    pages = {p.name for p in GUIDE}
    assert "README.md" in pages or "index.md" in pages, pages
    toc = (REPO / "docs" / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in GUIDE if p.name != "README.md" and f"({p.name}" not in toc]
    assert not missing, f"docs/README.md does not link to {missing}"


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_every_relative_link_resolves(path: Path):
    broken = []
    for in_code, number, line in blocks(path):
        if in_code:
            continue
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{rel(path)}:{number}: {target}"
            if not resolved.exists():
                broken.append(f"{where}: no such file {resolved}")
                continue
            if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(
                    f"{where}: no heading with anchor #{anchor} in {rel(resolved)} "
                    f"(it has: {', '.join(sorted(anchors(resolved)))})"
                )
    assert not broken, "\n".join(broken)


def test_slugs_are_githubs():
    assert slug("Traces (Jaeger)") == "traces-jaeger"
    assert slug("Fast — the canary") == "fast--the-canary"
    assert slug("Explain a late request across services (`holdup explain`)") == (
        "explain-a-late-request-across-services-holdup-explain"
    )
    assert slug('Load and experiments: "are responses delayed?" in numbers') == (
        "load-and-experiments-are-responses-delayed-in-numbers"
    )


# ------------------------------------------------------------------ the CLI, from --help

HELP_FLAG = re.compile(r"^\s+(?:-[A-Za-z], )?--([a-z0-9][a-z0-9-]*)")
# clap wraps help at the terminal's width, or 100 columns without one: `[env:` and the name can
# sit on two lines, so any whitespace between them.
HELP_ENV = re.compile(r"\[env:\s+([A-Z0-9_]+)=")
# Flags every clap command has; the docs need not list them.
BUILTIN = {"help", "version"}


def _help(path: tuple[str, ...]) -> str:
    env = {k: v for k, v in _server_env().items() if not k.startswith("HOLDUP_")}
    result = subprocess.run(
        [str(_holdup_bin()), *path, "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, f"holdup {' '.join(path)} --help: {result.stderr}"
    return result.stdout


def _subcommands(help_text: str) -> list[str]:
    """Names listed under a "Commands:" (or "RPCs …:") heading of a --help text."""
    names, listing = [], False
    for line in help_text.splitlines():
        if re.match(r"^(Commands|RPCs).*:$", line):
            listing = True
            continue
        if listing:
            match = re.match(r"^  ([a-z][a-z0-9-]*)\s", line + " ")
            if not match:
                listing = False
                continue
            if match.group(1) != "help":
                names.append(match.group(1))
    return names


@lru_cache(maxsize=1)
def cli() -> dict[tuple[str, ...], tuple[frozenset[str], frozenset[str]]]:
    """Every (sub)command path -> (its flags, its environment variables), from --help."""
    binary = _holdup_bin()
    if not binary.is_file():
        pytest.fail(f"holdup binary not found: {binary}; build it or set HOLDUP_BIN", pytrace=False)
    found = {}
    todo = [()]
    while todo:
        path = todo.pop()
        text = _help(path)
        flags = {m.group(1) for line in text.splitlines() if (m := HELP_FLAG.match(line))}
        found[path] = (frozenset(flags - BUILTIN), frozenset(HELP_ENV.findall(text)))
        todo += [(*path, name) for name in _subcommands(text)]
    return found


def subcommands() -> set[str]:
    return {path[0] for path in cli() if len(path) == 1}


@lru_cache(maxsize=None)
def flag_exists(path: tuple[str, ...], flag: str) -> bool:
    """Listed in `holdup <path> --help`, or accepted as a hidden alias (clap says
    "unexpected argument" of a flag it does not know)."""
    if flag in cli()[path][0] or flag in BUILTIN:
        return True
    for args in ([f"--{flag}", "--help"], [f"--{flag}", "1", "--help"]):
        result = subprocess.run(
            [str(_holdup_bin()), *path, *args], capture_output=True, text=True, timeout=30
        )
        if result.returncode == 0:
            return True
    return False


def all_flags() -> set[str]:
    return set().union(*(flags for flags, _ in cli().values()))


def test_the_cli_is_what_the_docs_expect():
    assert {"serve", "upstream", "load", "experiment", "explain"} <= subcommands()
    assert {"listen", "workers", "no-console"} <= cli()[("serve",)][0]
    assert "HOLDUP_LISTEN" in cli()[("serve",)][1]
    assert ("load", "cpu") in cli()


# ------------------------------------------------------------------ flags the docs name

# Flags the docs name in code spans that are not holdup's, and the file that has them.
NOT_HOLDUPS = {
    "cfg": ".cargo/config.toml",  # rustc's, `--cfg tokio_unstable`
    "hand-over": "examples/bare_echo.rs",  # the benchmark's bare server
    "diagnose": "examples/bare_echo.rs",
    "otel": "examples/bare_echo.rs",
    "when-late": "examples/bare_echo.rs",
}
# Separators after which a shell line runs another command.
SHELL_BREAK = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1"}


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return text.split()


def holdup_invocations(tokens: list[str]):
    """(subcommand path, flags) of every holdup command in a tokenised line: `holdup X`,
    `target/…/holdup X`, `cargo run [--release] -- X`, and the compose file's `load` service
    (`docker compose … run --rm load …`)."""
    subs = subcommands()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        start = None
        if (token == "holdup" or token.endswith("/holdup")) and i + 1 < len(tokens):
            start = i + 1
        elif token == "cargo" and tokens[i + 1 : i + 2] == ["run"] and "--" in tokens[i:]:
            dash = tokens.index("--", i)
            if not any(t in ("--example", "--bin", "-p", "--package") for t in tokens[i:dash]):
                start = dash + 1
        elif token == "docker" and "run" in tokens[i:] and "load" in tokens[i:]:
            start = tokens.index("load", i)
        if start is None or start >= len(tokens) or tokens[start] not in subs:
            i += 1
            continue
        path = (tokens[start],)
        flags = []
        j = start + 1
        while j < len(tokens) and tokens[j] not in SHELL_BREAK:
            word = tokens[j]
            if (*path, word) in cli() and len(path) == 1:
                path = (*path, word)
            elif word.startswith("--") and len(word) > 2:
                flags.append(word[2:].split("=", 1)[0])
            j += 1
        yield path, flags
        i = j


def flag_mentions(path: Path):
    """(where, subcommand path or None, flag) for every flag a doc names in code: in a holdup
    command line (checked against that subcommand) or a code span that is a flag alone
    (checked against every subcommand)."""
    lines: list[tuple[int, str, bool]] = []
    for block in code_blocks(path):
        joined, first = "", None
        for number, line in block:
            first = first or number
            text = line.lstrip("$ ").rstrip()
            if text.endswith("\\"):
                joined += text[:-1] + " "
                continue
            lines.append((first, joined + text, True))
            joined, first = "", None
    for in_code, number, line in blocks(path):
        if not in_code:
            lines += [(number, span, False) for span in code_spans(line)]
    for number, text, in_block in lines:
        where = f"{rel(path)}:{number}: {text}"
        tokens = _tokens(text)
        for sub, flags in holdup_invocations(tokens):
            for flag in flags:
                yield where, sub, flag
        if not in_block and tokens and tokens[0].startswith("--"):
            for word in tokens:
                if word.startswith("--") and len(word) > 2:
                    yield where, None, word[2:].split("=", 1)[0]


@pytest.mark.parametrize("path", DOCS, ids=rel)
def test_every_flag_the_docs_name_exists(path: Path):
    unknown = []
    everything = all_flags()
    for where, sub, flag in flag_mentions(path):
        if sub is not None:
            candidates = [sub]
            # `holdup load` without an RPC is `load fast`; the run's flags are global.
            if sub == ("load",):
                candidates.append(("load", "fast"))
            if not any(flag_exists(c, flag) for c in candidates):
                unknown.append(f"{where}: holdup {' '.join(sub)} has no --{flag}")
        elif "*" in flag:
            pattern = re.compile("^" + re.escape(flag).replace(r"\*", ".*") + "$")
            if not any(pattern.match(f) for f in everything):
                unknown.append(f"{where}: no holdup flag matches --{flag}")
        elif flag in NOT_HOLDUPS:
            source = (REPO / NOT_HOLDUPS[flag]).read_text(encoding="utf-8")
            if f"--{flag}" not in source and f'"{flag}"' not in source:
                unknown.append(f"{where}: --{flag} is not in {NOT_HOLDUPS[flag]} any more")
        elif flag not in everything and not any(flag_exists(p, flag) for p in cli()):
            unknown.append(f"{where}: no holdup subcommand has --{flag}")
    assert not unknown, "\n".join(unknown)


# ------------------------------------------------------------------ the configuration page


def configuration_sections() -> dict[str, str]:
    """`## holdup X` section of docs/configuration.md -> its text."""
    sections, name = {}, None
    for in_code, _, line in blocks(CONFIGURATION):
        match = None if in_code else re.match(r"^## (.*)$", line)
        if match:
            title = match.group(1).strip().strip("`")
            name = title.split()[1] if title.startswith("holdup ") else None
            sections.setdefault(name, "")
            continue
        sections[name] = sections.get(name, "") + line + "\n"
    return sections


def named_in(text: str) -> tuple[set[str], set[str]]:
    """Flags and HOLDUP_* variables a text names in code spans."""
    flags, env = set(), set()
    for line in text.splitlines():
        for span in code_spans(line):
            flags |= {m for m in re.findall(r"(?<![\w-])--([a-z0-9][a-z0-9-]*)", span)}
            env |= set(re.findall(r"\bHOLDUP_[A-Z0-9_]+\b", span))
    return flags, env


def test_the_configuration_page_lists_every_flag_and_variable():
    sections = configuration_sections()
    problems = []
    for sub in sorted(subcommands()):
        if sub not in sections:
            problems.append(f"docs/configuration.md has no section `## holdup {sub}`")
            continue
        paths = [p for p in cli() if p[:1] == (sub,)]
        flags = set().union(*(cli()[p][0] for p in paths))
        env = set().union(*(cli()[p][1] for p in paths))
        named_flags, named_env = named_in(sections[sub])
        problems += [f"holdup {sub}: --{f} is not on the page" for f in sorted(flags - named_flags)]
        problems += [f"holdup {sub}: {e} is not on the page" for e in sorted(env - named_env)]
        problems += [
            f"holdup {sub}: the page names --{f}, which it does not have"
            for f in sorted(named_flags - flags)
            if not any(flag_exists(p, f) for p in paths)
        ]
        problems += [
            f"holdup {sub}: the page names {e}, which it does not read"
            for e in sorted(named_env - env)
        ]
    # Outside the subcommands' sections: only variables some subcommand reads, as a flag's
    # or, for the few that are not flags, in the source (a string literal in src/).
    every_env = set().union(*(env for _, env in cli().values()))
    source = "\n".join(f.read_text(encoding="utf-8") for f in (REPO / "src").rglob("*.rs"))
    for name, text in sections.items():
        if name is None:
            _, named_env = named_in(text)
            problems += [
                f"the page names {e}, which no subcommand reads"
                for e in sorted(named_env - every_env)
                if f'"{e}"' not in source
            ]
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ the README's commands


def test_the_readme_opens_with_the_two_commands_ci_runs():
    first = code_blocks(README)[0]
    commands = [line.split("#", 1)[0].strip() for _, line in first]
    assert commands == ["cargo run --release -- serve", "tests/run.sh"], commands
    assert first[0][0] <= 5, "the two commands are at the very top"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^exec tests/run\.sh\s*$", ci, re.M), ".ci/run must exec tests/run.sh"
    for script in (REPO / ".ci" / "run", REPO / "tests" / "run.sh"):
        assert os.access(script, os.X_OK), f"{script} is not executable"


def test_the_readme_is_a_landing_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move reference into docs/"


def test_the_readmes_three_lines_are_the_engines_doctested_ones():
    (rust,) = [
        block
        for block in code_blocks(README)
        if README.read_text(encoding="utf-8").splitlines()[block[0][0] - 2].startswith("```rust")
    ]
    engine = {line.strip() for line in ENGINE_README.read_text(encoding="utf-8").splitlines()}
    lines = [line.strip() for _, line in rust if line.strip()]
    assert len(lines) == 3, lines
    missing = [line for line in lines if line not in engine]
    assert not missing, f"not in {rel(ENGINE_README)} (whose examples are doctests): {missing}"


def grpcurl_commands(path: Path) -> list[tuple[int, str]]:
    """The grpcurl command lines of a file's code blocks aimed at the docs' address (a `$ `
    prompt, `\\` continuations and comments dropped; a trailing `&` kept)."""
    found = []
    for block in code_blocks(path):
        joined, first = "", None
        for number, line in block:
            first = first or number
            text = line.rstrip()
            if text.endswith("\\"):
                joined += text[:-1] + " "
                continue
            text = (joined + text).strip()
            joined, start = "", first
            first = None
            if text.startswith("$ "):
                text = text[2:]
            if text.startswith("grpcurl ") and DOC_ADDRESS in text:
                found.append((start, text))
    return found


def run_doc_command(grpcurl: str, address: str, text: str) -> tuple[list[str], bool]:
    """The argv of a doc's grpcurl line against `address`, and whether it runs in the
    background (a trailing `&`)."""
    tokens = _tokens(text)
    background = bool(tokens) and tokens[-1] == "&"
    if background:
        tokens = tokens[:-1]
    assert tokens[0] == "grpcurl", text
    return [grpcurl, *[address if t == DOC_ADDRESS else t for t in tokens[1:]]], background


def answered(result_code: int, out: str, err: str) -> bool:
    """grpcurl got an answer: a reply (exit 0) or a gRPC status (exit 64 + code)."""
    return result_code == 0 and out.strip() != "" or result_code >= 64 and "Code:" in out + err


@pytest.fixture()
def walk_server(tmp_path):
    """The walk's server: `holdup serve --workers 1` on a random loopback port."""
    srv = _Server(
        _holdup_bin(),
        tmp_path / "stderr.log",
        workers=1,
        extra=("--metrics-addr", "127.0.0.1:0", "--no-console"),
    )
    try:
        yield srv.wait_listening(START_TIMEOUT_S), srv
    finally:
        if srv.stop() is None:
            srv.kill()


def header(stdout: str) -> dict[str, str]:
    line = next(l for l in stdout.splitlines() if l.startswith("holdup-diagnosis: "))
    return dict(kv.split("=", 1) for kv in line.removeprefix("holdup-diagnosis: ").split(" "))


def test_the_readme_walk_runs_and_shows_what_it_says(grpcurl, walk_server):
    address, srv = walk_server
    readme = README.read_text(encoding="utf-8")
    assert "serve --workers 1" in readme, "the walk starts the server the test starts"
    commands = grpcurl_commands(README)
    assert len(commands) == 3, commands
    background: list[tuple[str, subprocess.Popen]] = []
    results = []
    for number, text in commands:
        argv, in_background = run_doc_command(grpcurl, address, text)
        if in_background:
            proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            background.append((text, proc))
            time.sleep(1.0)  # as a reader types the next command: the call is under way
            continue
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"README.md:{number}: {text}\n{done.stdout}{done.stderr}\n{srv.describe()}"
        results.append((text, done.stdout))
    held = []
    for text, proc in background:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"{text}\n{out}{err}"
        reply = json.loads(out)
        assert reply["diagnostics"]["verdict"] == "own-cpu", reply
        held.append(reply["diagnostics"]["traceId"])
    first_text, first_out = results[0]
    assert json.loads(first_out)["diagnostics"]["traceId"], first_out
    bystander_text, bystander_out = results[-1]
    assert "-proto" in bystander_text, "the bystander skips reflection, or the wait is not in its reply"
    fields = header(bystander_out)
    assert fields["verdict"] == "runtime-contention", fields
    assert any(f"CpuBound@{t}" in fields.get("culprits", "") for t in held), (held, fields)


@pytest.mark.parametrize("path", [p for p in GUIDE if grpcurl_commands(p)], ids=rel)
def test_the_guides_grpcurl_commands_answer(grpcurl, server, path: Path):
    failed = []
    for number, text in grpcurl_commands(path):
        argv, background = run_doc_command(grpcurl, server, text)
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
        if not answered(done.returncode, done.stdout, done.stderr):
            failed.append(f"{rel(path)}:{number}: {text}\nexit {done.returncode}\n{done.stdout}{done.stderr}")
    assert not failed, "\n".join(failed)
