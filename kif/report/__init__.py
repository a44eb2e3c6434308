"""Reports over run directories: comparison table, score matrices, forgetting
trajectories and skill-unit importance (``kif report``). Needs matplotlib (``kif[report]``)."""
from .build import build_report, find_runs
from .plots import (DPI, importance_figsize, matrix_figsize, plot_importance, plot_matrix,
                    plot_trajectories, trajectory_figsize)
from .importance import load_importance, unit_fractions
from .tables import comparison_rows, load_run

__all__ = ["DPI", "build_report", "comparison_rows", "find_runs", "importance_figsize", "load_importance",
           "load_run", "matrix_figsize", "plot_importance", "plot_matrix", "plot_trajectories",
           "trajectory_figsize", "unit_fractions"]
