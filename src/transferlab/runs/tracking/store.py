"""Which MLflow store ``tracking.mlflow`` names, and whether it can be reached.

``on`` is ``sqlite:///<output_dir>/mlflow.db``; a folder holds ``mlflow.db`` (MLflow's
plain-file store is in maintenance mode and refuses to start); a ``.db`` file is that
SQLite file; anything else is a tracking URI. ``check_tracking`` runs before a stage
does any work, in at most a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from transferlab.config import Config, ConfigError
from transferlab.config.schema import did_you_mean

OFF_WORDS = ("", "off", "false", "no", "none")
ON_WORDS = ("on", "true", "yes", "default")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql", "databricks")
HEALTH_TIMEOUT_S = 3.0


class TrackingError(ConfigError):
    """``tracking.mlflow`` names a store that cannot be used; the message says the fix."""


def tracking_uri(cfg: Config) -> str | None:
    """The MLflow tracking URI ``tracking.mlflow`` stands for, or None when tracking is off."""
    value = str(cfg.tracking.mlflow).strip()
    if value.lower() in OFF_WORDS:
        return None
    if value.lower() in ON_WORDS:
        return sqlite_uri(Path(cfg.output_dir) / "mlflow.db")
    scheme = scheme_of(value)
    if scheme is None:
        return local_store_uri(Path(value))
    if scheme not in SCHEMES:
        raise TrackingError(
            f"tracking.mlflow={value!r}: unknown scheme {scheme!r}"
            f"{did_you_mean(scheme, SCHEMES)}; use a folder, sqlite:///file.db, "
            "http://host:5000, or tracking.mlflow=on"
        )
    if scheme == "file":
        return local_store_uri(Path(urlparse(value).path))
    return value


def scheme_of(value: str) -> str | None:
    """``http`` of ``http://host``; None for a path (``C:\\runs`` included)."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", value)
    return match.group(1).lower() if match else None


def local_store_uri(path: Path) -> str:
    """A ``.db`` file is a SQLite store; any other path is a folder holding mlflow.db."""
    if path.suffix.lower() in SQLITE_SUFFIXES:
        return sqlite_uri(path)
    return sqlite_uri(path / "mlflow.db")


def sqlite_uri(path: Path) -> str:
    # sqlite:////abs/file.db on POSIX (three slashes, then the absolute path).
    return "sqlite:///" + path.resolve().as_posix()


def sqlite_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///"))


def check_tracking(cfg: Config) -> str | None:
    """Check that the tracking store can be reached; call before a stage does any work.

    Returns the tracking URI (None when tracking is off). Raises TrackingError naming the
    URI and the fix. Fast: a local store is checked on disk, a server with one request
    of at most a few seconds.
    """
    uri = tracking_uri(cfg)
    if uri is None:
        return None
    setting = f"tracking.mlflow={cfg.tracking.mlflow!r}"
    if uri.startswith("sqlite:"):
        if names_a_folder(cfg):
            make_folder(sqlite_path(uri).parent, setting)
        check_sqlite(uri, setting)
    elif scheme_of(uri) in ("http", "https"):
        check_server(uri, setting)
    return uri


def names_a_folder(cfg: Config) -> bool:
    """``on`` or a folder: a store of our own making, created like output_dir is.

    A SQLite file named outright (``x.db``, ``sqlite:///...``) must be in a folder that
    exists, so a typo in its path is an error rather than a new folder somewhere.
    """
    value = str(cfg.tracking.mlflow).strip()
    if value.lower() in ON_WORDS:
        return True
    scheme = scheme_of(value)
    path = Path(urlparse(value).path if scheme == "file" else value)
    return scheme in (None, "file") and path.suffix.lower() not in SQLITE_SUFFIXES


def make_folder(folder: Path, setting: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(
            f"{setting}: cannot create the tracking folder {folder} ({err.strerror}). "
            "Point tracking.mlflow at a folder you can write, or tracking.mlflow=on"
        ) from None


def check_sqlite(uri: str, setting: str) -> None:
    path = sqlite_path(uri)
    folder = path.parent
    if not folder.is_dir():
        raise TrackingError(
            f"{setting}: the SQLite store {uri} is in {folder}, which does not exist. "
            f"Create it (mkdir -p {folder}), point tracking.mlflow elsewhere, or use "
            "tracking.mlflow=on for <output_dir>/mlflow.db"
        )
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise TrackingError(
            f"{setting}: cannot write the SQLite store {uri} ({target} is not writable). "
            "Point tracking.mlflow at a folder you can write, or tracking.mlflow=on"
        )


def check_server(uri: str, setting: str) -> None:
    """One short request to the server's /health; any HTTP answer means it is up."""
    if not urlparse(uri).netloc:
        raise TrackingError(f"{setting}: {uri} names no host; e.g. http://127.0.0.1:5000")
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        pass  # it answered: auth or path problems show up, as warnings, when logging
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"{setting}: cannot reach the MLflow tracking server at {uri} ({reason}). "
            "Start it (pip install mlflow; mlflow server --host 127.0.0.1 --port 5000), "
            "fix the URI, or track locally with tracking.mlflow=on (or turn tracking off "
            "with tracking.mlflow=off)"
        ) from None


@contextlib.contextmanager
def quick_http():
    """Bound MLflow's HTTP retries (its defaults retry for minutes) unless the user set them."""
    limits = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
    added = [k for k in limits if k not in os.environ]
    os.environ.update({k: limits[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)
