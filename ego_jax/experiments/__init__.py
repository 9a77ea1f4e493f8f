"""Experiment suites: runs, shared stages, hyperparameter selection, tables (scripts/experiment.py)."""
