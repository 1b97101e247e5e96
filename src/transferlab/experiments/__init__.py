"""Choosing between runs: statistics (intervals, paired tests, calibration), compare,
the learning-rate finder, sweeps and k-fold cross-validation on cached features.

Nothing is imported here: ``experiments.stats`` is plain NumPy/SciPy that evaluation
and reports use, and the rest load TensorFlow, Optuna or MLflow only when they run.
"""
