"""Command lines of the project's scripts: one-line errors (exit 2) and no guessed flags.

Every CLI (launch.py, evaluate.py, sweep.py, bench/) builds its parser as a OneLineParser
(bench scripts through `script_parser`): a bad value or an unknown flag raises UsageError with
one line, which the script prints with `exit_usage` as `<script>: error: <line>`, exit code 2; flag prefixes are not accepted (`--lr 1` would
otherwise be `--lr-decay-steps 1`) and an unknown flag names the closest known one.
"""

import argparse
import difflib
import sys


class UsageError(ValueError):
    """Bad input: one line naming the bad value and what is allowed; exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: raised as UsageError for the caller to print
    (launch.py, evaluate.py, sweep.py), or with `exit_on_usage` printed and exit code 2."""

    def __init__(self, *args, exit_on_usage: bool = False, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.exit_on_usage = exit_on_usage

    def error(self, message):
        if self.exit_on_usage:
            sys.exit(exit_usage(self.prog, message))
        raise UsageError(message)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unknown_argument_message(extras[0], self._option_string_actions))
        return parsed


def unknown_argument_message(arg: str, known) -> str:
    """'unrecognized argument: --lr (did you mean --learning-rate?)'-style message."""
    flag = arg.split("=", 1)[0]
    if not flag.startswith("-"):
        return f"unrecognized argument: {arg!r}"
    options = [o for o in known if o.startswith("--")]
    words = lambda option: set(option.lstrip("-").split("-"))  # noqa: E731
    ratio = lambda option: difflib.SequenceMatcher(None, flag, option).ratio()  # noqa: E731
    # fewest unshared words first, then spelling: --actors is --num-actors, not --torso
    by_words = sorted(options, key=lambda o: (len(words(o) ^ words(flag)), -ratio(o)))
    initials = [o for o in options if "".join(w[0] for w in o[2:].split("-")) == flag.lstrip("-")]
    close = initials[:1] or [o for o in by_words[:1] if words(flag) <= words(o)]
    close = close or difflib.get_close_matches(flag, options, n=1, cutoff=0.75)
    close = close or sorted(o for o in options if o.startswith(flag))[:1]
    close = close or [o for o in options if flag.lstrip("-") in o]
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unrecognized argument: {flag}{hint}"


def first_paragraph(doc: str) -> str:
    """A module docstring's first paragraph as one line: a parser's description."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def script_parser(doc: str, **kwargs) -> OneLineParser:
    """The parser of a bench script: its docstring's first paragraph as the description, one
    line and exit code 2 on bad input."""
    return OneLineParser(description=first_paragraph(doc), exit_on_usage=True, **kwargs)


def exit_usage(prog: str, exc: Exception) -> int:
    """Print `<prog>: error: <one line>` to stderr; the exit code of bad input."""
    print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
    return 2
