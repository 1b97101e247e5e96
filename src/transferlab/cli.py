"""Command line for make: ``python -m transferlab <stage> --config X --set 'a.b=1 c=2'``."""

from __future__ import annotations

import argparse
import sys

from transferlab.config import load_config
from transferlab.notebooks import run_notebook
from transferlab.stages import DEMO_STAGES, STAGES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transferlab", description=__doc__)
    parser.add_argument("stage", choices=[*STAGES, "demo"])
    parser.add_argument("--config", default=None, help="YAML config (configs/*.yaml)")
    parser.add_argument("--set", default="", help="overrides: 'phase1.epochs=3 seed=1'")
    parser.add_argument(
        "--notebook",
        action="store_true",
        help="run the stage's notebook with papermill (the executed copy goes to the run dir)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="train as N local processes (JAX backend, keras.distribution); see docs/scaling.md",
    )
    args = parser.parse_args(argv)
    if args.processes != 1:
        return launch_processes(args, parser)
    try:
        cfg = load_config(args.config, args.set)
        stages = DEMO_STAGES if args.stage == "demo" else [args.stage]
        for stage in stages:
            print(f"[transferlab] {stage}", flush=True)
            if args.notebook and STAGES[stage].notebook:
                result = run_notebook(stage, args.config, args.set)
            else:
                result = STAGES[stage].run(cfg)
            if result is not None:
                print(f"[transferlab] {stage}: {result}", flush=True)
        if args.stage == "demo":
            from transferlab.reports.checkpoint import day_checkpoint_path

            print(f"[transferlab] demo finished; report: {day_checkpoint_path(cfg)}", flush=True)
    except FileNotFoundError as err:
        print(f"transferlab: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        # transferlab's own errors (ConfigError, DataError, TrainingError, NotebookFailed,
        # ...) carry a message meant for the user.
        if not type(err).__module__.startswith("transferlab."):
            raise
        print(f"transferlab: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("transferlab: interrupted", file=sys.stderr)
        return 130
    return 0


def launch_processes(args, parser) -> int:
    """``--processes N``: the same stage as N local processes of one JAX run."""
    from transferlab.launch import DISTRIBUTED_STAGES, launch

    if args.stage not in DISTRIBUTED_STAGES:
        parser.error(f"--processes trains across processes: use it with {DISTRIBUTED_STAGES}")
    if args.notebook:
        parser.error("--processes runs the library, not the notebook: drop --notebook")
    if args.processes < 1:
        parser.error(f"--processes {args.processes}: it must be at least 1")
    command = [sys.executable, "-m", "transferlab", args.stage, "--set", args.set]
    if args.config:
        command += ["--config", args.config]
    return launch(command, args.processes)
