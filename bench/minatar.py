"""MinAtar at a frame budget: games x seeds x configs, each run one process (`python launch.py
--preset minatar-GAME ...` for ours, `python -m bench.peers.sb3_ppo` for the peer), all judged by the
project's greedy evaluation on the same held-out env seeds every --eval-every-env-steps frames.
The JSON is rewritten (atomically) after every run; at the end a table (per game and config:
the median over seeds of the greedy return at the budget) and a PNG next to the JSON (one
panel per game: median greedy return against frames, and against wall time).

  python -m bench.minatar --games breakout space-invaders --seeds 0 1 2 --frames 1000000 \\
      --configs ours sb3-ppo --max-seconds 3600 --out docs/results/minatar-1m.json
  python -m bench.minatar ... --out docs/results/minatar-1m.json --resume   # skip the runs done

Configs: `ours` (launch.py on Ray, the preset's settings), `ours-in-process` (--in-process),
`sb3-ppo` (SB3 PPO with gymnax-blines' MinAtar settings and the MinAtar paper's network; its
docstring has the sources). Frames are env steps (MinAtar has no frame skip). Each run stops
at the first step at or past --frames (the peer at its first rollout boundary past it: up to
8192 frames over) or after --max-seconds, and then makes one more greedy evaluation: the
"greedy at the budget" is that last one. Greedy evaluations use the env seeds of role "eval"
(common/envs.derive_seed) that no actor trains on, the same for ours and the peer; MinAtar has
no reward threshold, so ours never screens and never stops early (do not pass --solve-return:
a threshold would put a screen in front of every evaluation). Wall time is each run's own
clock (ours: from its run logger's start, after imports and, on Ray, start-up; the peer: from
process start); frames/s divide frames by the whole process's wall time. Runs one at a time,
so what else the machine runs slows every config alike.

Flags after `--` go to our runs only (launch.py's), e.g. `-- --replay-ratio 6.4`.

--resume continues --out: (game, config, seed) triples already in it are skipped (a run that
failed is run again); its configs must be among those asked for, its games and seeds too, and
its budgets the same.
"""

import json
import shlex
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench.ablate import greedy_curve, median_curve, previous_rows, spread, write_result
from bench.solve import PEERS, launch_command, machine, read_run, run_dir
from common.cli import OneLineParser, UsageError, exit_usage, first_paragraph
from common.config import PRESETS, ConfigError

# game -> MinAtar env id; the games with a preset of their own run it, the others get
# minatar-breakout's settings with their env (docs/presets.md)
GAMES = {
    "breakout": "MinAtar/Breakout-v1",
    "space-invaders": "MinAtar/SpaceInvaders-v1",
    "asterix": "MinAtar/Asterix-v1",
    "freeway": "MinAtar/Freeway-v1",
    "seaquest": "MinAtar/Seaquest-v1",
}
OURS = {"ours": [], "ours-in-process": ["--in-process"]}  # config -> launch.py flags
BENCH_PEERS = ("sb3-ppo",)  # the peers (bench/solve.py PEERS) with a MinAtar setting


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="minatar.py", description=first_paragraph(__doc__))
    parser.add_argument(
        "--games", nargs="+", default=["breakout"], help=f"MinAtar games: {', '.join(GAMES)}"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="run seeds (launch.py --seed)"
    )
    parser.add_argument("--frames", type=int, default=1_000_000, help="each run's frame budget")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["ours", "sb3-ppo"],
        help=f"configs: {', '.join([*OURS, *BENCH_PEERS])}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="JSON, rewritten after every run; the PNG next to it",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="each run's time budget in seconds"
    )
    parser.add_argument(
        "--eval-every-env-steps",
        type=int,
        default=50_000,
        help="frames between greedy evaluations (launch.py's flag; the peer's --eval-every-steps)",
    )
    parser.add_argument(
        "--eval-episodes", type=int, default=30, help="greedy episodes per evaluation"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue --out: skip the (game, config, seed) runs it holds",
    )
    parser.add_argument(
        "--keep-runs", type=Path, default=None, help="keep the run directories below this folder"
    )
    parser.add_argument("extra", nargs="*", help="launch.py flags for our runs only (after --)")
    return parser


def check_args(args) -> None:
    """ConfigError (one line) for a game, config or budget this script cannot run."""
    for name, allowed in (("--games", GAMES), ("--configs", [*OURS, *BENCH_PEERS])):
        values = args.games if name == "--games" else args.configs
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ConfigError(f"{name} {' '.join(bad)}: allowed: {', '.join(allowed)}")
    if args.frames < 1 or args.max_seconds <= 0 or args.eval_every_env_steps < 1:
        raise ConfigError("--frames and --eval-every-env-steps must be >= 1, --max-seconds > 0")
    if args.eval_episodes < 1:
        raise ConfigError("--eval-episodes must be >= 1")


def run_flags(game: str, config: str, args) -> list:
    """What one run gets on its command line (before --seed, --max-seconds and its run dir)."""
    env = GAMES[game]
    if config in PEERS:
        return [
            "--env",
            env,
            "--max-env-steps",
            str(args.frames),
            "--eval-every-steps",
            str(args.eval_every_env_steps),
            "--eval-episodes",
            str(args.eval_episodes),
        ]
    preset = f"minatar-{game}"
    own = (
        ["--preset", preset]
        if preset in PRESETS
        else ["--preset", "minatar-breakout", "--env", env]
    )
    return [
        *own,
        "--max-env-steps",
        str(args.frames),
        "--eval-every-env-steps",
        str(args.eval_every_env_steps),
        "--eval-episodes",
        str(args.eval_episodes),
        *OURS[config],
        *args.extra,
    ]


def run_one(game: str, config: str, seed: int, args, run_root: Path) -> dict:
    """One run as its own process; its row: read_run's, the game, the greedy curves against
    frames and against wall time (from its metrics.jsonl), the greedy return at the budget."""
    root = run_root / game
    argv = launch_command(config, seed, run_flags(game, config, args), args.max_seconds, root)
    row = {"game": game, **read_run(config, seed, argv, root)}
    metrics = run_dir(root, config, seed) / "metrics.jsonl"
    curve, curve_s = greedy_curve(metrics), greedy_curve(metrics, "time_s")
    if "error" not in row and not curve:
        row["error"] = ["no greedy evaluation in metrics.jsonl"]
    frames = row.get("env_steps")
    return {
        **row,
        "greedy_at_budget": curve[-1][1] if curve else None,
        "frames_per_s": round(frames / row["process_wall_s"], 1) if frames else None,
        "curve": curve,
        "curve_s": curve_s,
    }


def summarize(rows, games, configs) -> dict:
    """{game: {config: runs, greedy at the budget (median, min, max over seeds), frames reached
    (median), frames/s and process wall seconds (medians)}} for the runs that finished."""
    out = {}
    for game in games:
        out[game] = {}
        for config in configs:
            mine = [r for r in rows if (r["game"], r["config"]) == (game, config)]
            mine = [r for r in mine if "error" not in r]
            out[game][config] = {
                "runs": len(mine),
                "greedy_at_budget": spread(r["greedy_at_budget"] for r in mine),
                "frames": spread(r["env_steps"] for r in mine)["median"],
                "frames_per_s": spread(r["frames_per_s"] for r in mine)["median"],
                "process_wall_s": spread(r["process_wall_s"] for r in mine)["median"],
            }
    return out


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def text_table(summary: dict) -> str:
    header = [
        "game",
        "config",
        "seeds",
        "greedy at budget (min-max)",
        "frames",
        "frames/s",
        "wall s",
    ]
    lines = [header]
    for game, per_config in summary.items():
        for config, m in per_config.items():
            g = m["greedy_at_budget"]
            greedy = (
                "-" if g["median"] is None else f"{g['median']:.1f} ({g['min']:.1f}-{g['max']:.1f})"
            )
            lines.append(
                [
                    game,
                    config,
                    str(m["runs"]),
                    greedy,
                    _num(m["frames"]),
                    _num(m["frames_per_s"], 1),
                    _num(m["process_wall_s"]),
                ]
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def plot(rows, games, configs, path: Path, title: str) -> None:
    """One column per game: the median over seeds of the greedy return against frames (top)
    and against wall seconds (bottom), one line per config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(games), figsize=(5 * len(games), 8), squeeze=False)
    for col, game in enumerate(games):
        for config in configs:
            mine = [r for r in rows if (r["game"], r["config"]) == (game, config)]
            label = f"{config} ({len(mine)} seeds)"
            for ax, key in ((axes[0][col], "curve"), (axes[1][col], "curve_s")):
                curve = median_curve([r.get(key) for r in mine])
                if curve:
                    x, y = zip(*curve)
                    ax.plot(x, y, drawstyle="steps-post", marker=".", label=label)
        axes[0][col].set_title(game)
        axes[0][col].set_xlabel("frames")
        axes[1][col].set_xlabel("wall seconds (the run's clock)")
        for ax in axes[:, col]:
            ax.set_ylabel("greedy return (median over seeds)")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 160), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = shlex.join(["python", "-m", "bench.minatar", *argv])
    try:
        args = build_parser().parse_args(argv)
        check_args(args)
        settings = {
            "frames": args.frames,
            "max_seconds": args.max_seconds,
            "eval_every_env_steps": args.eval_every_env_steps,
            "eval_episodes": args.eval_episodes,
            "extra": args.extra,
        }
        # "variants" as bench/ablate.py's --resume checks them: config -> its own flags
        variants = {c: OURS.get(c, []) for c in args.configs}
        rows = previous_rows(args.out, args.resume, variants, args.seeds, settings)
        other_games = sorted({r["game"] for r in rows} - set(args.games))
        if other_games:
            raise ConfigError(
                f"--resume: {args.out} has games {other_games} that --games leaves out"
            )
    except UsageError as exc:
        return exit_usage("minatar.py", exc)
    done = {(r["game"], r["config"], r["seed"]) for r in rows}
    todo = [
        (game, config, seed)
        for seed in args.seeds
        for game in args.games
        for config in args.configs
        if (game, config, seed) not in done
    ]
    print(f"{len(todo)} runs to do, {len(done)} done already", flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": command,
        "machine": machine(),
        "games": {g: GAMES[g] for g in args.games},
        "variants": variants,
        "run_flags": {g: {c: run_flags(g, c, args) for c in args.configs} for g in args.games},
        "seeds": args.seeds,
        **settings,
    }

    def save():
        summary = summarize(rows, args.games, args.configs)
        write_result(args.out, {**result, "summary": summary, "rows": rows})
        return summary

    with tempfile.TemporaryDirectory() as tmp:
        run_root = args.keep_runs or Path(tmp)
        for game, config, seed in todo:
            row = run_one(game, config, seed, args, run_root)
            if row.get("stop_reason", "").startswith("interrupted"):
                print(f"{game} {config} seed {seed} was interrupted: not recorded", flush=True)
                continue
            print(json.dumps({k: v for k, v in row.items() if not k.startswith("curve")}))
            rows.append(row)
            save()
    rows.sort(
        key=lambda r: (args.games.index(r["game"]), args.configs.index(r["config"]), r["seed"])
    )
    summary = save()
    print("\n" + text_table(summary))
    png = args.out.with_suffix(".png")
    plot(rows, args.games, args.configs, png, command)
    print(f"-> {args.out}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
