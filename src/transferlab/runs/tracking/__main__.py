"""``python -m transferlab.runs.tracking outputs/runs/<run-id> ... [--uri URI]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transferlab.runs.tracking.log import log_existing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m transferlab.runs.tracking", description="Log run folders to MLflow."
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="outputs/runs/<run-id> ...")
    parser.add_argument("--uri", help="tracking URI (default: the run's tracking.mlflow)")
    args = parser.parse_args(argv)
    try:
        for run_dir in args.run_dirs:
            log_existing(run_dir, args.uri)
    except Exception as err:  # MLflow's errors too: each says what went wrong
        print(f"transferlab: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
