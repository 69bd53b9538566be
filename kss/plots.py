"""The paper's Fig. 3 for a sweep: accuracy per setting, normalised search time, accuracy vs memory."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from kss.analysis import Job, Setting, quality  # noqa: E402


def epoch_curves(job_dir: Path, column: str = "val/acc") -> dict[int, float]:
    """Per-epoch values from every CSV session of a (possibly resumed) run; later sessions win."""
    curve = {}
    for path in sorted(Path(job_dir).glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get(column) not in (None, "") and row.get("epoch") not in (None, ""):
                    curve[int(float(row["epoch"]))] = float(row[column])
    return curve


def _points(ax, rows: list[Setting], values, errors, ylabel: str, title: str) -> None:
    names = [r.setting for r in rows]
    # points with error bars rather than bars: the axis is zoomed to the differences
    ax.errorbar(range(len(rows)), [v if v is not None else float("nan") for v in values],
                yerr=[e or 0 for e in errors], fmt="o", capsize=4, color="tab:blue")
    ax.grid(axis="y", alpha=0.3)
    ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
    shown = [v for v in values if v is not None]
    if shown:  # zoom in on the differences, which are what the plot is for
        low, high = min(shown), max(shown)
        pad = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
        ax.set_ylim(low - pad - max((e or 0) for e in errors), high + pad + max((e or 0) for e in errors))
    ax.set_ylabel(ylabel)
    ax.set_title(title)


def plot_all(root: Path, jobs: list[Job], rows: list[Setting], selection: dict, front: list[Setting]) -> list[Path]:
    rows = [r for r in rows if r.complete]
    if not rows:
        return []
    metric = quality(rows[0])[0]
    label = "test accuracy" if metric == "test_acc" else "best R-score"
    written = []

    # (a) accuracy per setting, and per epoch where training curves were logged
    curves = {}
    for row in rows:
        members = [epoch_curves(Path(j.path)) for j in jobs if j.setting == row.setting and j.dataset == row.dataset
                   and j.status == "complete" and j.kind == "train"]
        members = [c for c in members if len(c) > 1]  # a one-epoch "curve" says nothing the left panel does not
        if members:
            epochs = sorted(set.intersection(*(set(c) for c in members)))
            curves[row.setting] = (epochs, [sum(c[e] for c in members) / len(members) for e in epochs])
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(12 if curves else 7, 4.5), squeeze=False)
    values = [quality(r)[1] for r in rows]
    errors = [r.test_acc_std if metric == "test_acc" else r.score_std for r in rows]
    _points(axes[0][0], rows, values, errors, label, f"(a) {label} per setting (mean ± std over seeds)")
    if curves:
        for name, (epochs, accs) in curves.items():
            axes[0][1].plot(epochs, accs, marker="o", ms=3, label=name)
        axes[0][1].set(xlabel="epoch", ylabel="validation accuracy", title="(a) validation accuracy per epoch")
        axes[0][1].legend(fontsize=7)
    written.append(_save(fig, root / "accuracy.png"))

    # (b) search time, normalised to SNASNet's 1x1_3x3_5000x when the sweep has it
    normalised = all(r.search_time_normalised is not None for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _points(ax, rows, [r.search_time_normalised if normalised else r.search_seconds_mean for r in rows],
          [None if normalised else r.search_seconds_std for r in rows],
          "search time / 1x1_3x3_5000x" if normalised else "search time [s]", "(b) search time per setting")
    written.append(_save(fig, root / "search_time.png"))

    # (c) accuracy vs parameters, Pareto front, budget, selection
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r.params_mean for r in rows], values, color="tab:blue", zorder=3)
    for r, v in zip(rows, values):
        ax.annotate(r.setting, (r.params_mean, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.plot([r.params_mean for r in front], [quality(r)[1] for r in front], "--", color="tab:green", label="Pareto front")
    if selection.get("max_params"):
        ax.axvline(selection["max_params"], color="tab:red", ls=":", label=f"budget {selection['max_params']:.3g}")
    chosen = next((r for r in rows if r.setting == selection.get("selected")), None)
    if chosen:
        ax.scatter([chosen.params_mean], [quality(chosen)[1]], s=160, facecolors="none", edgecolors="tab:red",
                   label=f"selected: {chosen.setting}", zorder=4)
    ax.set(xlabel="parameters", ylabel=label, title="(c) accuracy-memory trade-off")
    ax.legend(fontsize=8)
    written.append(_save(fig, root / "tradeoff.png"))

    # Step 1 of the method: single kernel sizes side by side
    single = [r for r in rows if len(r.kernels) == 1]
    if single:
        fig, ax = plt.subplots(figsize=(6, 4))
        _points(ax, single, [quality(r)[1] for r in single],
              [r.test_acc_std if metric == "test_acc" else r.score_std for r in single], label,
              "Impact of kernel size (single-kernel search spaces)")
        written.append(_save(fig, root / "kernel_sizes.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
