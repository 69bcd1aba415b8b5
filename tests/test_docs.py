"""The documentation cannot drift from the code: every command line of the three scripts shown in
README.md and docs/*.md parses with that script's own parser, every relative link resolves, and
docs/USAGE.md lists exactly the flags of each script's --help, in the same groups, with the same
defaults. Nothing here trains or writes a file."""
import argparse
import contextlib
import glob
import importlib
import io
import os
import re
import shlex

import pytest

from utils.args import check_training_args
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
SCRIPTS = ("train.py", "importance_evaluation.py", "train_subset.py")
LAUNCHERS = ("python", "python3", "torchrun")
PLACEHOLDER = re.compile(r"<[^<>\s]+>|\.\.\.|…")         # <T>, <epoch>, "..." stand for something else
ENV_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")      # VAR=value before a command


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def split_code(text):
    """(prose lines, code lines) of a markdown text: code = the lines inside ``` fences."""
    prose, code, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif fenced:
            code.append(line)
        else:
            prose.append(line)
    return prose, code


def script_commands(code_lines):
    """(script, argv, line) for every command of the three scripts in these code lines: continuation
    lines joined, comments dropped, split at shell operators, VAR=value prefixes skipped, launched by
    python/python3 or torchrun (its own options skipped); lines with placeholders are left out."""
    joined, buf = [], ""
    for line in code_lines:
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
        else:
            joined.append(buf + line)
            buf = ""
    joined.append(buf)
    found = []
    for line in joined:
        if PLACEHOLDER.search(line) or not any(s in line for s in SCRIPTS):
            continue
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        segment = []
        for tok in list(lex) + [";"]:
            if tok and all(c in lex.punctuation_chars for c in tok):      # &&, |, ;, > ...
                while segment and ENV_PREFIX.match(segment[0]):
                    segment.pop(0)
                names = [os.path.basename(t) for t in segment]
                if names and names[0] in LAUNCHERS and any(n in SCRIPTS for n in names):
                    i = next(i for i, n in enumerate(names) if n in SCRIPTS)
                    found.append((names[i], segment[i + 1:], line.strip()))
                segment = []
            else:
                segment.append(tok)
    return found


def all_commands():
    return [(doc, *c) for doc in DOCS for c in script_commands(split_code(read(doc))[1])]


def module(script):
    return importlib.import_module(script[:-3])


def parse(script, argv):
    """The script's parse_args(argv) plus the checks that need no files; an error message or None."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = module(script).parse_args(argv)
            if script != "importance_evaluation.py":
                check_training_args(args)
            if script == "train_subset.py":
                module(script).check_subset_args(args)
    except SystemExit:
        return err.getvalue().strip() or "exit"
    except UserError as e:
        return str(e)
    return None


def test_every_shown_command_parses():
    commands = all_commands()
    per_script = {s: sum(c[1] == s for c in commands) for s in SCRIPTS}
    # so that a broken extraction cannot pass by finding nothing
    assert len(commands) >= 15 and min(per_script.values()) >= 3, per_script
    bad = [f"{doc}: {line}\n    -> {msg}" for doc, script, argv, line in commands
           if (msg := parse(script, argv)) is not None]
    assert not bad, "command lines in the docs that their script refuses:\n" + "\n".join(bad)


def test_command_extraction():
    """The extraction itself, on lines whose answer is known."""
    code = ["OMP_NUM_THREADS=1 python3 train.py --epochs 3 \\", "    --dataset digits   # a comment",
            "torchrun --standalone --nproc_per_node=2 train_subset.py --selection random && echo done",
            "python importance_evaluation.py --trajectory_len <T>",
            "python train.py ... --stop_epoch 90",
            "cat train.py", "bash scripts/sweep.sh"]
    assert script_commands(code) == [
        ("train.py", ["--epochs", "3", "--dataset", "digits"],
         "OMP_NUM_THREADS=1 python3 train.py --epochs 3      --dataset digits   # a comment"),
        ("train_subset.py", ["--selection", "random"],
         "torchrun --standalone --nproc_per_node=2 train_subset.py --selection random && echo done")]
    assert parse("train.py", ["--epochs", "0"]) is not None       # the checks can fail
    assert "--no_such_flag" in parse("train_subset.py", ["--no_such_flag"])


def slug(heading):
    """GitHub's anchor of a heading: link targets reduced to their text, lower case, punctuation
    other than - and _ dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(rel):
    seen, out = {}, set()
    for line in split_code(read(rel))[0]:
        m = re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            out.add(f"{s}-{seen[s]}" if s in seen else s)
            seen[s] = seen.get(s, 0) + 1
    return out


def links(rel):
    prose = "\n".join(split_code(read(rel))[0])
    prose = re.sub(r"`[^`\n]*`", "", prose)                     # code spans are not links
    return re.findall(r"\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)", prose)


def test_every_relative_link_resolves():
    assert slug("Data (`--dataset`)") == "data---dataset" and slug("Cost: prune, [fast](x)") == "cost-prune-fast"
    bad, checked = [], 0
    for doc in DOCS:
        for target in links(doc):
            if re.match(r"[a-z]+:", target):                    # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            checked += 1
            if not os.path.exists(os.path.join(ROOT, dest)):
                bad.append(f"{doc}: ({target}): {dest} does not exist")
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                bad.append(f"{doc}: ({target}): no heading with anchor #{anchor} in {dest}")
    assert checked >= 30, checked
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_readme_is_a_landing_page():
    lines = read("README.md").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the reference belongs in docs/"
    assert "python -m pytest -q tests" in read("README.md")      # what .ci/run runs


# ---------------------------------------------------------------------------------------------------
# docs/USAGE.md against each script's --help
# ---------------------------------------------------------------------------------------------------
class _Parser(Exception):
    pass


def script_parser(script, monkeypatch):
    """The ArgumentParser that the script's parse_args builds, caught before it parses anything."""
    def catch(self, *a, **k):
        raise _Parser(self)
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(_Parser) as e:
            module(script).parse_args([])
    return e.value.args[0]


def help_flags(parser):
    """{(group title, --flag): default} as --help shows them (the help flag itself left out)."""
    out = {}
    for group in parser._action_groups:
        for action in group._group_actions:
            if not isinstance(action, argparse._HelpAction):
                flag = max(action.option_strings, key=len)
                out[(group.title, flag)] = action.default
    return out


def shown_default(value):
    """How USAGE.md writes a default: `10`, `0.3 0.5 0.7 0.9`, or — for none (None, off, empty)."""
    if value is None or value is False or (isinstance(value, (str, list)) and not value):
        return "—"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def usage_tables():
    """{script: {(group, flag): default cell}} read from docs/USAGE.md by its convention: a `##`
    heading made only of script names opens their section, a `###` heading is a group title, a
    table row whose first cell starts with `--flag` lists that flag with its default in cell two."""
    out = {s: {} for s in SCRIPTS}
    scripts, group = (), None
    for line in split_code(read("docs/USAGE.md"))[0]:
        m = re.match(r"(#{1,6})\s+(.+?)\s*$", line)
        if m:
            level, title = len(m.group(1)), m.group(2)
            if level <= 2:
                names = re.split(r"\s*,\s*|\s+and\s+", title)
                scripts, group = (tuple(names) if all(n in SCRIPTS for n in names) else ()), None
            elif level == 3:
                group = title
            continue
        m = re.match(r"\|\s*`(--[\w-]+)[^`]*`", line)
        if m and scripts and group:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            for s in scripts:
                out[s][(group, m.group(1))] = cells[1] if len(cells) > 1 else ""
    return out


@pytest.mark.parametrize("script", SCRIPTS)
def test_usage_lists_the_flags_of_help(script, monkeypatch):
    in_help = help_flags(script_parser(script, monkeypatch))
    in_doc = usage_tables()[script]
    missing = sorted(set(in_help) - set(in_doc))
    extra = sorted(set(in_doc) - set(in_help))
    msg = [f"{script} --help has {flag} in group '{group}': list it in docs/USAGE.md under "
           f"'## {script}' (or a section naming it), '### {group}'" for group, flag in missing]
    msg += [f"docs/USAGE.md lists {flag} in group '{group}' of {script}, which --help does not have there"
            for group, flag in extra]
    assert not msg, "\n".join(msg)
    wrong = [f"{script} {flag} ('{group}'): --help default {shown_default(in_help[(group, flag)])!r}, "
             f"docs/USAGE.md says {cell!r}"
             for (group, flag), cell in in_doc.items()
             if (want := shown_default(in_help[(group, flag)])) != cell and f"`{want}`" not in cell]
    assert not wrong, "defaults in docs/USAGE.md that differ from the code:\n" + "\n".join(wrong)
