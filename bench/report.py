"""The results page: docs/results.md and README.md's results, both built from the committed JSON
in docs/results/, so the two cannot disagree and every figure carries the command and date that
made it.

  python -m bench.report            # rewrite docs/results.md and README.md's marked blocks
  python -m bench.report --check    # exit 1, naming the file, if either is not what the JSON gives

Sources: solve-*.json (bench/solve.py --out), update-*.json (bench/update.py --out),
single-runs.json (single launch.py runs, from their summary.json), minatar-*.json
(bench/minatar.py --out), quickstart-*.json (the quick-start command's output). Lab notes on how the figures came about: docs/results-notes.md.
"""

import json
import shlex
import statistics
import sys
from pathlib import Path

from common.cli import script_parser
from common.files import write_atomic

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "docs" / "results"
RESULTS_MD = ROOT / "docs" / "results.md"
README = ROOT / "README.md"

NAMES = {  # bench/solve.py config names as a reader knows them
    "default": "`python launch.py` (local Ray)",
    "in-process": "`python launch.py --in-process`",
    "seed": "`python launch.py --preset seed`",
    "sb3-ppo": "Stable-Baselines3 PPO (rl-zoo settings)",
    "rllib-ppo": "RLlib PPO (Ray's tuned CartPole example)",
}


def load(pattern: str) -> list:
    return [(p, json.loads(p.read_text())) for p in sorted(SOURCES.glob(pattern))]


def solve_command(d: dict) -> str:
    """The bench/solve.py command a solve JSON came from (recorded since 2026-12-03; rebuilt from
    its settings for files written before)."""
    if "command" in d:
        return d["command"]
    configs = list(d["summary"])
    policy = " --check-policy" if any("check_mean" in r for r in d["rows"]) else ""
    return (
        f"python -m bench.solve --configs {' '.join(configs)} --seeds {' '.join(map(str, d['seeds']))}"
        f"{policy} --compile-cache {d.get('compile_cache', 'user')}"
    )


def num(x, digits=0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def machine(d: dict) -> str:
    m = d["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items())
    return f"{m['cpus']} CPUs, {'GPU ' + m['gpu'] if m.get('gpu') else 'no GPU'}, Python {m['python']}, {packages}"


def solve_table(d: dict) -> list:
    lines = [
        "| run | seeds solved | median process wall | median env steps | env steps by seed | policy.pt2 on 100 new episodes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in d["summary"].items():
        rows = [r for r in d["rows"] if r["config"] == name]
        steps = " / ".join(num(r["env_steps"]) if r["solved"] else "unsolved" for r in rows)
        checks = [r["check_mean"] for r in rows if r.get("check_mean") is not None]
        check = f"{min(checks):.1f}-{max(checks):.1f}" if checks else ""
        wall = "-" if m["median_wall_s"] is None else f"{m['median_wall_s']:.1f} s"
        lines.append(
            f"| {NAMES.get(name, name)} | {m['solved']} / {m['runs']} | {wall} | "
            f"{num(m['median_env_steps'])} | {steps} | {check} |"
        )
    return lines


def ratio_lines(d: dict) -> list:
    lines = []
    for r in d["ratios"]:
        wall = "-" if r["wall"] is None else f"{r['wall']:.2f}x"
        lines.append(
            f"- {NAMES.get(r['ours'], r['ours'])} / {NAMES.get(r['peer'], r['peer'])}: "
            f"wall {wall}, env steps {r['env_steps']:.2f}x"
        )
    return lines


def update_table(d: dict) -> list:
    lines = [
        "| preset | code | mode | update (ms, median of repeats) | aten calls per update |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in d["rows"]:
        lines.append(
            f"| {r['preset']} | {r['code']} (`{r['folder']}`) | {r['mode']} | {r['update_ms']:.2f} | "
            f"{num(r.get('aten_calls'))} |"
        )
    return lines


def single_runs_table(runs: list) -> list:
    lines = [
        "| run | date | solved | seconds | env steps | learner steps | greedy eval | sampled eval |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| `{r['command']}` | {r['date']} | {'yes' if r['solved'] else 'no'} | {r['seconds']:.1f} | "
            f"{num(r['env_steps'])} | {num(r['learner_steps'])} | {r['greedy_eval']:.1f} | {r['sampled_eval']:.1f} |"
        )
    return lines


def results_page() -> str:
    out = [
        "# Results",
        "",
        "<!-- Built by `python -m bench.report` from docs/results/*.json: edit those, not this page. -->",
        "",
        "Every figure below was measured on the project's development machine and is rebuilt from",
        "the JSON its command wrote (docs/results/). Ratios to peers are taken within one invocation:",
        'the machine\'s speed drifts by up to 2x between days. "Solved" means a separate greedy',
        "evaluation (100 episodes on env seeds the actors never use) reached the env's threshold (475",
        "for CartPole-v1, 200 for LunarLander-v3). How the figures came about, and older ones:",
        "docs/results-notes.md.",
        "",
        "## CartPole-v1: time to solve, against peers in the same invocation",
    ]
    for path, d in load("solve-*.json"):
        out += [
            "",
            f"### {d['date']}, compiled-loss cache `{d.get('compile_cache', 'user')}` ({path.name})",
            "",
            f"`{solve_command(d)}` on {machine(d)}.",
            "",
            *solve_table(d),
            "",
            "Ours / peer on the medians (below 1: ours is faster or needs fewer env steps):",
            "",
            *ratio_lines(d),
        ]
    for path, d in load("update-*.json"):
        out += [
            "",
            f"## One learner update ({d['date']}, {path.name})",
            "",
            f"`python -m bench.update {shlex.join(d['argv'])}` on {machine(d)}.",
            "",
            *update_table(d),
        ]
    for path, d in load("minatar-*.json"):
        out += [
            "",
            f"## MinAtar, {d['frames']:,} frames ({d['date']}, {path.name})",
            "",
            f"`{d['command']}` on {machine(d)}. Greedy return at the budget, {d['eval_episodes']} "
            "episodes on env seeds the runs never trained on:",
            "",
            "| game | config | seeds | greedy at budget, median (min-max) | frames/s | process wall |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for game, configs in d["summary"].items():
            for config, m in configs.items():
                g = m["greedy_at_budget"]
                out.append(
                    f"| {game} | {config} | {m['runs']} | {g['median']:.1f} ({g['min']:.1f}-{g['max']:.1f}) | "
                    f"{m['frames_per_s']:,.0f} | {m['process_wall_s']:.1f} s |"
                )
        if (SOURCES / path.with_suffix(".png").name).is_file():
            out += [
                "",
                f"![greedy return against frames and wall time](results/{path.with_suffix('.png').name})",
            ]
    for path, d in load("single-runs.json"):
        out += [
            "",
            f"## Single runs ({path.name})",
            "",
            d["about"],
            "",
            *single_runs_table(d["runs"]),
        ]
        for r in d["runs"]:
            if r.get("curve"):
                out += ["", f"![learning curve of `{r['command']}`, {r['date']}]({r['curve']})"]
    return "\n".join(out) + "\n"


def readme_results() -> str:
    """README's table: the newest warm CartPole benchmark and the single runs beyond CartPole."""
    solves = [(p, d) for p, d in load("solve-*.json") if d.get("compile_cache", "user") == "user"]
    _, d = max(solves, key=lambda pd: pd[1]["date"])
    runs = json.loads((SOURCES / "single-runs.json").read_text())["runs"]
    lines = [
        f"CartPole-v1 on the project's 2-core, no-GPU machine, {d['date']}, seeds "
        f"{d['seeds'][0]}-{d['seeds'][-1]}, peers in the same invocation (`{solve_command(d)}`):",
        "",
        "| run | seeds solved | median wall | median env steps |",
        "| --- | --- | --- | --- |",
    ]
    for name, m in d["summary"].items():
        wall = "-" if m["median_wall_s"] is None else f"{m['median_wall_s']:.1f} s"
        lines.append(
            f"| {NAMES.get(name, name)} | {m['solved']} / {m['runs']} | {wall} | {num(m['median_env_steps'])} |"
        )
    lines += [
        "",
        "Beyond CartPole, single runs (one row per preset; every seed in docs/results.md):",
        "",
    ]
    lines += [
        "| preset | date | seeds solved | median seconds | median env steps | greedy eval |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    by_preset = {}
    for r in runs:
        by_preset.setdefault(r["name"], []).append(r)
    for name, rs in by_preset.items():
        solved = sum(r["solved"] for r in rs)
        dates = sorted({r["date"] for r in rs})
        lines.append(
            f"| `--preset {name}` ({rs[0]['env']}) | {dates[0]}{' to ' + dates[-1] if len(dates) > 1 else ''} | "
            f"{solved} / {len(rs)} | {statistics.median(r['seconds'] for r in rs):.1f} | "
            f"{num(statistics.median(r['env_steps'] for r in rs))} | "
            f"{statistics.median(r['greedy_eval'] for r in rs):.1f} |"
        )
    return "\n".join(lines)


def quickstart_output() -> str:
    _, q = max(load("quickstart-*.json"), key=lambda pd: pd[1]["date"])
    return "\n".join(
        [
            f"This output is of the command above on {q['date']} ({q['conditions']}):",
            "",
            "```",
            *q["output"],
            "```",
        ]
    )


def with_block(text: str, name: str, body: str) -> str:
    """text with what lies between <!-- NAME:begin --> and <!-- NAME:end --> replaced by body."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"report.py: error: README.md has no {begin} ... {end} block")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def built() -> dict:
    readme = README.read_text()
    readme = with_block(readme, "results", readme_results())
    readme = with_block(readme, "quickstart-output", quickstart_output())
    return {RESULTS_MD: results_page(), README: readme}


def main(argv=None) -> int:
    parser = script_parser(__doc__, prog="report.py")
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 where a page differs"
    )
    args = parser.parse_args(argv)
    pages = built()
    stale = [p for p, text in pages.items() if not p.is_file() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(
                f"report.py: {path.relative_to(ROOT)} differs from docs/results/*.json; run python -m bench.report"
            )
        return 1 if stale else 0
    for path, text in pages.items():
        write_atomic(path, text.encode())
        print(f"report.py: wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
