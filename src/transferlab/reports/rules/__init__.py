"""Diagnostic rules: what a careful reader concludes from a run's files.

Each rule reads plain data (a metrics.csv history as a DataFrame, balance.json,
audit.json, skipped.csv, metrics.json, predictions.csv) and returns ``Finding``s: a rule
id, a severity, a message whose numbers all come from that data, and the usual next
action, naming the setting to change. ``diagnose`` runs the history rules of one
training run and picks its verdict.
"""

from transferlab.reports.rules.data import (
    check_class_balance,
    check_leakage,
    check_skipped,
    check_validation_size,
    skipped_reasons,
)
from transferlab.reports.rules.evaluation import check_collapse, check_evaluation, gap_to_target
from transferlab.reports.rules.findings import SEVERITY_ORDER, Finding, RunInfo, finite
from transferlab.reports.rules.history import (
    VERDICT_ORDER,
    Diagnosis,
    check_fine_tuning,
    diagnose,
    monitored,
    priority,
)

__all__ = [
    "SEVERITY_ORDER",
    "VERDICT_ORDER",
    "Diagnosis",
    "Finding",
    "RunInfo",
    "check_class_balance",
    "check_collapse",
    "check_evaluation",
    "check_fine_tuning",
    "check_leakage",
    "check_skipped",
    "check_validation_size",
    "diagnose",
    "finite",
    "gap_to_target",
    "monitored",
    "priority",
    "skipped_reasons",
]
