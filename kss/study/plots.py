"""Figures: the paper's Fig. 3 for a sweep (accuracy per setting, normalised search time, accuracy vs memory),
the proxy and calibration studies, and picks' accuracy against their energy per image."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from kss.study.rows import QUALITY_LABELS, Job, Setting, pareto_front, quality, quality_std  # noqa: E402


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
    label = QUALITY_LABELS[metric]
    written = []

    # (a) accuracy per setting, (b) per epoch where training curves were logged
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
    errors = [quality_std(r) for r in rows]
    _points(axes[0][0], rows, values, errors, label, f"(a) {label} per setting (mean ± std over seeds)")
    if curves:
        for name, (epochs, accs) in curves.items():
            axes[0][1].plot(epochs, accs, marker="o", ms=3, label=name)
        axes[0][1].set(xlabel="epoch", ylabel="validation accuracy", title="(b) validation accuracy per epoch")
        axes[0][1].legend(fontsize=7)
    written.append(_save(fig, root / "accuracy.png"))

    # (c) search time, normalised to SNASNet's 1x1_3x3_5000x when the sweep has it
    normalised = all(r.search_time_normalised is not None for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _points(ax, rows, [r.search_time_normalised if normalised else r.search_seconds_mean for r in rows],
          [None if normalised else r.search_seconds_std for r in rows],
          "search time / 1x1_3x3_5000x" if normalised else "search time [s]", "(c) search time per setting")
    written.append(_save(fig, root / "search_time.png"))
    # (b') guided strategies: candidates each needed to reach the largest random search's best R
    guided = [r for r in rows if r.strategy != "random" and r.reached_random_best is not None]
    if guided:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _points(ax, guided, [r.trials_to_random_best for r in guided], [None] * len(guided),
                "candidates (median over the seeds that reached it)",
                "(b') candidates to reach the best R of " + guided[0].reached_random_best.split(" vs ")[1])
        for i, r in enumerate(guided):
            ax.annotate(r.reached_random_best.split(" vs ")[0], (i, r.trials_to_random_best or 0), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        written.append(_save(fig, root / "search_time_guided.png"))

    # (d) accuracy vs parameters, Pareto front, budget, selection
    written.append(_tradeoff(root / "tradeoff.png", rows, values, front, selection, "params_mean", "parameters",
                             "max_params", "(d) accuracy-memory trade-off"))
    # (e) accuracy vs energy per image, where the runs measured it
    costed = [(r, v) for r, v in zip(rows, values) if r.energy_uj_mean is not None]
    if costed:
        written.append(_tradeoff(root / "tradeoff_energy.png", [r for r, _ in costed], [v for _, v in costed],
                                 pareto_front([r for r, _ in costed], "energy_uj_mean"), selection, "energy_uj_mean",
                                 "energy per image [uJ] (MACs x E_MAC + SOPs x E_AC)", "max_energy_uj",
                                 "(e) accuracy-energy trade-off"))

    # Step 1 of the method: single kernel sizes side by side
    single = [r for r in rows if len(r.kernels) == 1]
    if single:
        fig, ax = plt.subplots(figsize=(6, 4))
        _points(ax, single, [quality(r)[1] for r in single],
              [quality_std(r) for r in single], label,
              "Impact of kernel size (single-kernel search spaces)")
        written.append(_save(fig, root / "kernel_sizes.png"))
    return written


def _tradeoff(path: Path, rows: list[Setting], values: list, front: list[Setting], selection: dict, x: str,
              xlabel: str, budget: str, title: str) -> Path:
    """Quality against one cost figure: the points, their Pareto front, the budget line, the selection."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([getattr(r, x) for r in rows], values, color="tab:blue", zorder=3)
    for r, v in zip(rows, values):
        ax.annotate(r.setting, (getattr(r, x), v), fontsize=7, xytext=(3, 3), textcoords="offset points")
    # markers too: a front of one setting has no line to draw, and the legend shows both
    ax.plot([getattr(r, x) for r in front], [quality(r)[1] for r in front], ls="--", marker="D", ms=5, lw=1.5,
            color="tab:green", label="Pareto front", zorder=2)
    if selection.get(budget):
        ax.axvline(selection[budget], color="tab:red", ls=":", label=f"budget {selection[budget]:.3g}")
    chosen = next((r for r in rows if r.setting == selection.get("selected")), None)
    if chosen:
        ax.scatter([getattr(chosen, x)], [quality(chosen)[1]], s=160, facecolors="none", edgecolors="tab:red",
                   label=f"selected: {chosen.setting}", zorder=4)
    ax.set(xlabel=xlabel, ylabel=QUALITY_LABELS[quality(rows[0])[0]], title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_proxy(root: Path, rows: list[dict], result: dict) -> list[Path]:
    """proxy.png: each proxy against validation accuracy, one colour per kernel set, tau in the legend;
    proxy_ranks.png: rank by R against rank by accuracy."""
    from scipy.stats import rankdata

    rows = [r for r in rows if r.get("val_acc") is not None]
    sets = sorted({r["kernel_set"] for r in rows})
    colours = dict(zip(sets, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    proxies = ["hamming", "naswot", "params", "random"]
    fig, axes = plt.subplots(1, len(proxies), figsize=(4 * len(proxies), 3.6), sharey=True)
    for ax, proxy in zip(axes, proxies):
        for ks in sets:
            members = [r for r in rows if r["kernel_set"] == ks and r[proxy] is not None]
            stat = result["correlations"].get(ks, {}).get(proxy)
            label = f"{ks}" + (f" (tau {stat['tau']:+.2f})" if stat and stat["tau"] is not None else "")
            ax.scatter([r[proxy] for r in members], [r["val_acc"] for r in members], s=18, color=colours[ks], label=label)
        pooled = result["correlations"].get("pooled", {}).get(proxy)
        title = {"hamming": "R (SNASNet)", "naswot": "NASWOT R", "params": "parameters", "random": "random (floor)"}[proxy]
        ax.set_title(title + (f"\npooled tau {pooled['tau']:+.2f}" if pooled and pooled["tau"] is not None else ""))
        ax.set_xlabel(proxy)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation accuracy")
    written = [_save(fig, root / "proxy.png")]
    fig, ax = plt.subplots(figsize=(4.4, 4))
    score_rank, acc_rank = rankdata([r["hamming"] for r in rows]), rankdata([r["val_acc"] for r in rows])
    for ks in sets:
        idx = [i for i, r in enumerate(rows) if r["kernel_set"] == ks]
        ax.scatter(score_rank[idx], acc_rank[idx], s=18, color=colours[ks], label=ks)
    ax.plot([1, len(rows)], [1, len(rows)], color="grey", lw=0.8, ls="--", label="perfect ranking")
    ax.set_xlabel("rank by R at initialisation")
    ax.set_ylabel("rank by validation accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    written.append(_save(fig, root / "proxy_ranks.png"))
    return written


def plot_regret(path: Path, curves: dict, budget: str = "") -> Path:
    """Best-of-k regret (accuracy points) of every proxy and of random selection, k = 1..n."""
    k = curves["k"]
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    labels = {"hamming": "R (SNASNet)", "naswot": "NASWOT R", "params": "parameters", "random": "random number"}
    for name, label in labels.items():
        if name in curves:
            ax.plot(k, [100 * v for v in curves[name]], label=label)
    ax.plot(k, [100 * v for v in curves["random_selection"]], color="grey", ls="--", label="random selection")
    ax.set_xlabel("k architectures drawn, the best-scoring one kept")
    ax.set_ylabel("expected regret (accuracy points)")
    ax.set_title(f"best-of-k regret, n = {len(k)}" + (f"\n{budget}" if budget else ""), fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_calibration(path: Path, result: dict) -> Path:
    """The budget calibration at a glance: reliability per budget (95% BCa bars, the target dashed) and each
    architecture's first finished seed against its second (the closer to the diagonal, the more one run says)."""
    rows, target = result["budgets"], result["settings"]["target"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.9))
    accs = [100 * a for row in rows for runs in row["val_acc"].values() for a in runs[:2] if a is not None]
    for i, row in enumerate(rows):
        colour = f"C{i}"
        if row["reliability"] is not None:
            low, high = row["reliability_ci"]
            # clamped: a BCa interval can exclude its own estimate when the bootstrap is very skewed
            bars = None if low is None or high is None else [[max(0.0, row["reliability"] - low)],
                                                            [max(0.0, high - row["reliability"])]]
            left.errorbar([row["budget_epochs"]], [row["reliability"]], yerr=bars, fmt="o", color=colour, capsize=4)
        pairs = [runs[:2] for runs in row["val_acc"].values() if len(runs) >= 2]
        right.scatter([100 * a for a, _ in pairs], [100 * b for _, b in pairs], s=18, color=colour,
                      label=f"{row['budget_epochs']:g} epoch(s)")
    left.axhline(target, color="grey", ls="--", lw=0.8, label=f"target {target:g}")
    left.set_xscale("log")
    left.set_xticks([r["budget_epochs"] for r in rows], [f"{r['budget_epochs']:g}" for r in rows])
    left.minorticks_off()
    left.set_xlabel("training budget (epochs)")
    left.set_ylabel("single-run reliability")
    lows = [r["reliability_ci"][0] for r in rows if r["reliability_ci"][0] is not None]
    left.set_ylim(max(-1.0, min([-0.1, *lows])), 1.02)  # a wild lower bound (few archs) would flatten the rest
    left.legend(fontsize=7)
    if accs:
        pad = max(0.5, 0.05 * (max(accs) - min(accs)))
        lo, hi = min(accs) - pad, max(accs) + pad
        right.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="equal")
        right.set_xlim(lo, hi)
        right.set_ylim(lo, hi)
        right.set_aspect("equal")
    right.set_xlabel("validation accuracy, one seed (%)")
    right.set_ylabel("another seed (%)")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    s = result["settings"]
    fig.suptitle(f"budget calibration: {s['archs']} architectures x {s['seeds']} seeds ({s['dataset']})", fontsize=9)
    return _save(fig, path)


def accuracy_points(rows: list[dict]) -> list[tuple[str, float, list[float], float, float]]:
    """(label, energy per image, accuracies in %, mean, sd) of each row ({"label", "energy_uj", "test_acc": one
    value per seed}) that has an energy and a finished seed; sd is 0 for a single seed."""
    points = []
    for row in rows:
        if not row.get("energy_uj") or not row.get("test_acc"):
            continue
        accs = [100 * a for a in row["test_acc"]]
        mean = statistics.fmean(accs)
        points.append((row["label"], row["energy_uj"], accs, mean, statistics.stdev(accs) if len(accs) > 1 else 0.0))
    return points


def plot_accuracy_energy(path: Path, rows: list[dict], title: str) -> Path:
    """Picks compared on both axes a deployment cares about: each row's seeds (dots) and their mean ± sd
    against its energy per image (accuracy_points)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, energy, accs, mean, sd) in enumerate(accuracy_points(rows)):
        colour = f"C{i}"
        ax.scatter([energy] * len(accs), accs, s=14, alpha=0.45, color=colour)
        ax.errorbar([energy], [mean], yerr=[sd], fmt="o", ms=7, capsize=4, color=colour)
        ax.annotate(f"{label} (n={len(accs)})", (energy, mean), textcoords="offset points", xytext=(7, 3), fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 4, 10, 20, not 4x10^0
    ax.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("energy per image (uJ, log scale)")
    ax.set_ylabel("test accuracy (%): seeds (dots), mean ± sd")
    ax.set_title(title, fontsize=9, wrap=True)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)
