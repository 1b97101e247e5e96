"""MLflow tracking: a finished run folder, logged to MLflow as one MLflow run.

The run folder stays the interface between stages; MLflow gets a copy of it to browse
and compare: the resolved config as params, metrics.csv as per-epoch metric history,
summary.json / metrics.json numbers as final metrics, figures and small text files as
artifacts. ``tracking.mlflow`` picks the store:

- ``""`` / ``off``: no tracking;
- ``on``: ``sqlite:///<output_dir>/mlflow.db`` (artifacts in ``<output_dir>/mlartifacts``);
- a folder: ``<folder>/mlflow.db`` (MLflow's plain-file store is in maintenance mode and
  refuses to start, so a folder holds a SQLite store); a ``.db`` file: that SQLite file;
- any tracking URI: ``sqlite:///file.db``, ``http://host:5000``, ``postgresql://...``.

Stages call ``check_tracking(cfg)`` before any work, so a store that cannot be reached
stops them at once, and ``track_run(cfg, run_dir, kind)`` when the run folder is
complete; a failure then only warns, the files stay, and

    python -m transferlab.runs.tracking outputs/runs/<run-id> [--uri URI]

logs the folder later (a resumed phase updates its MLflow run, never duplicates it).
mlflow is imported inside functions: with tracking off it is never loaded. ``store``
resolves and checks the URI, ``folder`` reads what a run folder gives MLflow, ``log``
creates or updates the MLflow run.
"""

from transferlab.runs.tracking.folder import RECORD
from transferlab.runs.tracking.log import log_existing, track_run
from transferlab.runs.tracking.store import TrackingError, check_tracking, tracking_uri

__all__ = ["RECORD", "TrackingError", "check_tracking", "log_existing", "track_run", "tracking_uri"]
