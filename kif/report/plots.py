"""Figures of ``kif report`` (matplotlib, Agg canvas, no pyplot global state).

Every figure has a fixed DPI and a size that is a deterministic function of its shape
(``*_figsize``), saved without ``bbox_inches="tight"``: the PNG is exactly
``round(w·DPI) × round(h·DPI)`` pixels. Layout is matplotlib's constrained layout, so
labels do not overlap at any size.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from ..errors import KifError
from .importance import load_importance, natural_key, parse_unit
from .tables import is_joint, row_labels, task_series

DPI = 100


def _mpl():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise KifError("kif report needs matplotlib: pip install 'kif[report]'") from None
    return matplotlib, Figure, FigureCanvasAgg


def _new_figure(figsize):
    _, Figure, FigureCanvasAgg = _mpl()
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # fixed metadata: the bytes depend only on the content (and the matplotlib version)
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def _short(s: str, n: int = 18) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _nan(v):
    return float("nan") if v is None else float(v)


# ---- score matrix ---------------------------------------------------------------------------

def matrix_figsize(n_rows: int, n_cols: int) -> tuple[float, float]:
    """Inches for a heatmap of n_rows (zero-shot included) × n_cols tasks."""
    return (max(6.0, round(2.8 + 0.62 * n_cols, 2)), max(4.5, round(1.9 + 0.42 * n_rows, 2)))


def plot_matrix(results: dict, path: str | Path) -> Path:
    """K×K score matrix a[j][i] (docs/method.md §7) as a heatmap, values annotated, the
    zero-shot row on top. Rows not run yet (partial run) are grey. Returns ``path``."""
    import numpy as np

    matplotlib, _, _ = _mpl()
    tasks = results["tasks"]
    k = len(tasks)
    rows, labels = [], []
    if results.get("zero_shot") is not None:
        rows.append(results["zero_shot"])
        labels.append("zero-shot")
    rows += results["matrix"]
    labels += row_labels(results)
    if not is_joint(results):
        for j in range(len(results["matrix"]), k):
            rows.append([None] * k)
            labels.append(f"after {j + 1}: {tasks[j]} (not run)")
    data = np.array([[_nan(v) for v in r] for r in rows], dtype=float)
    labels = [_short(s, 30) for s in labels]
    fig = _new_figure(matrix_figsize(len(rows), k))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")
    norm = matplotlib.colors.Normalize(0, 100)
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    fs = 9 if k <= 8 else 7 if k <= 12 else 6
    for r in range(data.shape[0]):
        for c in range(k):
            v = data[r, c]
            if math.isnan(v):
                continue
            rgba = cmap(norm(v))
            lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
            ax.text(c, r, f"{v:.1f}", ha="center", va="center", fontsize=fs,
                    color="black" if lum > 0.5 else "white")
    zs = 1 if results.get("zero_shot") is not None else 0
    if not is_joint(results):  # outline a_{j,j}: the score right after learning the task
        for j in range(min(len(results["matrix"]), k)):
            ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, j + zs - 0.5), 1, 1, fill=False,
                                                      edgecolor="#e8453c", linewidth=1.5))
    if zs:
        ax.axhline(0.5, color="white", linewidth=3)
    ax.set_xticks(range(k), [f"{i + 1}: {_short(t)}" for i, t in enumerate(tasks)],
                  rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center", fontsize=fs + 1)
    ax.set_yticks(range(len(labels)), labels, fontsize=fs + 1)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("model after training on")
    ax.tick_params(length=0)
    title = f"{results.get('run_name') or results.get('method')}: {results.get('method')} · {results.get('model')}"
    if results.get("order") is not None:
        title += f" · order {results['order']}"
    ax.set_title(_short(title, 90), fontsize=10)
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label("score (accuracy / Rouge-L)")
    return _save(fig, path)


# ---- trajectories (paper Figure 5) ---------------------------------------------------------------

TRAJ_COLS = 3


def trajectory_figsize(n_runs: int) -> tuple[float, float]:
    ncols = min(n_runs, TRAJ_COLS)
    nrows = math.ceil(n_runs / TRAJ_COLS)
    return (max(9.0, round(4.0 * ncols + 2.6, 2)), round(4.2 + 3.2 * nrows, 2))


def _run_label(run: dict, runs: Sequence[dict]) -> str:
    same = sum(1 for r in runs if r.get("method") == run.get("method"))
    label = str(run.get("method"))
    return label if same == 1 else f"{label} ({run.get('run_name')})"


def _trajectory(run: dict, i: int) -> tuple[list[int], list[float]]:
    points = task_series(run, i)
    return [x for x, _ in points], [_nan(v) for _, v in points]


def _task1_frame(ax, tasks: Sequence[str], title: str, first: int = 0) -> None:
    """Axes, title and legend of a "task 1 along the sequence" panel; x from ``first`` (0 = zero-shot)."""
    k = len(tasks)
    labels = ["zero-shot"] + [f"{j + 1}: {_short(t, 14)}" for j, t in enumerate(tasks)]
    ax.set_xticks(list(range(first, k + 1)), labels[first:], rotation=0 if k <= 4 else 30,
                  ha="right" if k > 4 else "center", fontsize=8)
    ax.set_xlim(first - 0.3, k + 0.3)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("after task j")
    ax.set_ylabel(f"score on task 1 ({_short(tasks[0], 24)})")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="method", title_fontsize=8)


def plot_trajectories(runs: Sequence[dict], path: str | Path) -> Path:
    """Forgetting along the sequence (paper Figure 5) for runs sharing one task sequence.

    Top panel: score of task 1 after each task j (x = 0 is zero-shot), one line per run.
    Bottom panels, one per run: every task's score after each task j; task 1 bold, the
    point where each task is learned marked. Returns ``path``.
    """
    if not runs:
        raise ValueError("plot_trajectories: no runs")
    tasks = list(runs[0]["tasks"])
    if any(list(r["tasks"]) != tasks for r in runs):
        raise KifError("plot_trajectories: the runs do not share one task sequence")
    matplotlib, _, _ = _mpl()
    k = len(tasks)
    n = len(runs)
    fig = _new_figure(trajectory_figsize(n))
    nrows = math.ceil(n / TRAJ_COLS)
    top, bottom = fig.subfigures(2, 1, height_ratios=[4.2, 3.2 * nrows])
    xt = list(range(k + 1))

    ax = top.subplots()
    cycle = matplotlib.colormaps["tab10"]
    for r_i, run in enumerate(runs):
        xs, ys = _trajectory(run, 0)
        joint = is_joint(run)
        label = _run_label(run, runs)
        if joint and "joint" not in label:
            label += " (joint)"
        ax.plot(xs, ys, marker="osD^v<>p*h"[r_i % 10],
                linestyle="none" if joint else ("-", "--", "-.", ":")[r_i % 4], linewidth=2, markersize=7,
                color=cycle(r_i % 10), label=label, alpha=0.9)
        if joint and run["matrix"]:
            ax.axhline(ys[-1], color=cycle(r_i % 10), linestyle=":", linewidth=1.2)
    _task1_frame(ax, tasks, f"Task 1 ({_short(tasks[0], 30)}) along the sequence")

    ncols = min(n, TRAJ_COLS)
    axes = bottom.subplots(nrows, ncols, squeeze=False, sharey=True)
    tcmap = matplotlib.colormaps["tab20" if k > 10 else "tab10"]
    handles = [matplotlib.lines.Line2D([], [], color=tcmap(i % tcmap.N), linewidth=2.6 if i == 0 else 0.9,
                                       label=f"{i + 1}: {_short(t, 20)}") for i, t in enumerate(tasks)]
    for r_i, run in enumerate(runs):
        a = axes[r_i // ncols][r_i % ncols]
        for i in range(k):
            xs, ys = _trajectory(run, i)
            bold = i == 0
            a.plot(xs, ys, color=tcmap(i % tcmap.N), linewidth=2.6 if bold else 0.9,
                   marker="o" if is_joint(run) else None, linestyle="none" if is_joint(run) else "-",
                   alpha=1.0 if bold else 0.8, zorder=3 if bold else 2)
            if not is_joint(run) and i < len(run["matrix"]):  # where task i is learned
                a.plot([i + 1], [_nan(run["matrix"][i][i])], marker="o", markersize=4 if not bold else 6,
                       color=tcmap(i % tcmap.N), zorder=4)
        a.set_title(_short(_run_label(run, runs), 40), fontsize=9)
        a.set_xticks(xt, ["zs"] + [str(j + 1) for j in range(k)], fontsize=7)
        a.set_xlim(-0.3, k + 0.3)
        a.set_ylim(-3, 103)
        a.grid(alpha=0.3)
        a.set_xlabel("after task j", fontsize=8)
        if r_i % ncols == 0:
            a.set_ylabel("score", fontsize=8)
    for r_i in range(n, nrows * ncols):
        axes[r_i // ncols][r_i % ncols].set_visible(False)
    axes[0][ncols - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7,
                              ncols=1 if k <= 12 else 2, title="task (1 bold)", title_fontsize=7)
    bottom.suptitle("Every task along the sequence (● = just learned)", fontsize=10)
    return _save(fig, path)


# ---- task 1 over seeds (kif.report.aggregate) ------------------------------------------------------

def plot_seed_trajectories(order: tuple, bands: dict, path: str | Path, title: str | None = None) -> Path:
    """Score of task 1 after each task: one line per method (mean over seeds) with a min-max band."""
    matplotlib, _, _ = _mpl()
    k = len(order)
    fig = _new_figure((max(8.0, round(4.5 + 0.55 * k, 2)), 4.8))
    ax = fig.subplots()
    cycle = matplotlib.colormaps["tab10"]
    for i, (label, b) in enumerate(bands.items()):
        color = cycle(i % 10)
        if b["joint"]:
            ax.errorbar(b["x"], b["mean"], yerr=[[m - lo for m, lo in zip(b["mean"], b["min"])],
                                                 [hi - m for m, hi in zip(b["mean"], b["max"])]],
                        fmt="D", color=color, capsize=4, label=f"{label} (joint)")
            continue
        ax.plot(b["x"], b["mean"], marker="osD^v<>p*h"[i % 10], linestyle=("-", "--", "-.", ":")[i % 4],
                color=color, linewidth=2, markersize=6, label=f"{label} (n={max(b['n'])})")
        ax.fill_between(b["x"], b["min"], b["max"], color=color, alpha=0.15, linewidth=0)
    first = 0 if any(0 in b["x"] for b in bands.values()) else 1  # no zero-shot column without zero-shot scores
    _task1_frame(ax, order, title or "Task 1 along the sequence: mean over seeds, band = min-max", first)
    return _save(fig, path)


# ---- unit importance (paper Figures 6-7) ---------------------------------------------------------------

def importance_figsize(n_tasks: int) -> tuple[float, float]:
    return (max(7.0, round(4.0 + 0.5 * n_tasks, 2)), 9.0)


def plot_importance(run_dir: str | Path, path: str | Path, title: str | None = None) -> Path:
    """Skill-unit importance of a KIF run: units (rows, sorted by stack, layer, module,
    rank) × tasks (columns); colour = the task's current score I(U_k), min-max
    normalised per task. A strip left of task 1 marks each unit's module. Returns ``path``."""
    import numpy as np

    matplotlib, _, _ = _mpl()
    imp = load_importance(run_dir)
    tasks, units = imp["tasks"], imp["units"]
    k, u = len(tasks), len(units)
    data = np.array(imp["current"], dtype=float).T  # units × tasks
    for c in range(k):
        col = data[:, c]
        finite = col[np.isfinite(col)]
        if finite.size:
            lo, hi = finite.min(), finite.max()
            data[:, c] = (col - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(col), 0.0, np.nan)

    parsed = [parse_unit(n) for n in units]
    modules = sorted({p["module"] for p in parsed}, key=natural_key)
    groups: list[tuple[str, int, int]] = []  # (label, first row, last row)
    for r, p in enumerate(parsed):
        stack = {"encoder": "enc ", "decoder": "dec "}.get(p["stack"], "")
        label = f"{stack}L{p['layer']}" if p["layer"] is not None else f"{stack}other"
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1], r)
        else:
            groups.append((label, r, r))

    fig = _new_figure(importance_figsize(k))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=0, vmax=1, aspect="auto",
                   interpolation="nearest", extent=(-0.5, k - 0.5, u - 0.5, -0.5))
    # module strip: one more "column" left of task 1, coloured by module
    mcolors = [matplotlib.colormaps["tab10"](i % 10) for i in range(len(modules))]
    strip = np.array([[mcolors[modules.index(p["module"])]] for p in parsed])
    sw = max(0.25, 0.04 * k)  # strip width in data units (about constant on screen)
    ax.imshow(strip, aspect="auto", interpolation="nearest", extent=(-0.6 - sw, -0.6, u - 0.5, -0.5))
    ax.set_xlim(-0.6 - sw, k - 0.5)
    ax.set_ylim(u - 0.5, -0.5)
    every = max(1, math.ceil(len(groups) / 40))
    ax.set_yticks([(g[1] + g[2]) / 2 for g in groups][::every], [g[0] for g in groups][::every],
                  fontsize=7 if len(groups) <= 24 else 6)
    ax.tick_params(axis="y", length=0)
    prev_stack = parsed[0]["stack"] if parsed else ""
    for label, first, _ in groups[1:]:
        stack_change = parsed[first]["stack"] != prev_stack
        prev_stack = parsed[first]["stack"]
        ax.axhline(first - 0.5, color="white", linewidth=2.0 if stack_change else 0.5)
    ax.axvline(-0.55, color="white", linewidth=2)
    ax.set_xticks(range(k), [f"{i + 1}: {_short(t, 16)}" for i, t in enumerate(tasks)],
                  rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center", fontsize=8)
    ax.set_xlabel("task")
    ax.set_ylabel(f"skill units ({u}), by layer and module")
    ax.set_title(_short(title or f"{Path(run_dir).name}: unit importance", 80), fontsize=10)
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("importance I(U_k), min-max per task")
    handles = [matplotlib.patches.Patch(color=mcolors[i], label=_short(m, 30)) for i, m in enumerate(modules)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(modules), 4), fontsize=7,
               title="module", title_fontsize=7)
    return _save(fig, path)
