"""Command lines of the project's scripts: one-line errors (exit 2) and no guessed flags.

Every CLI (launch.py, evaluate.py, sweep.py, bench/) builds its parser with `parser()`: a bad
value or an unknown flag raises UsageError with one line, which the script prints as
`<script>: error: <line>` and exits with code 2; flag prefixes are not accepted (`--lr 1` would
otherwise be `--lr-decay-steps 1`) and an unknown flag names the closest known one.
"""

import argparse
import difflib
import sys


class UsageError(ValueError):
    """Bad input: one line naming the bad value and what is allowed; exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
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
    initials = [o for o in options if "".join(w[0] for w in o[2:].split("-")) == flag.lstrip("-")]
    close = initials[:1] or difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
    close = close or sorted(o for o in options if o.startswith(flag))[:1]
    close = close or [o for o in options if flag.lstrip("-") in o]
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unrecognized argument: {flag}{hint}"


def parser(prog: str, description: str) -> OneLineParser:
    return OneLineParser(prog=prog, description=description)


def exit_usage(prog: str, exc: Exception) -> int:
    """Print `<prog>: error: <one line>` to stderr; the exit code of bad input."""
    print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
    return 2
