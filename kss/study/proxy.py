"""The proxy study's analysis: does a higher R at initialisation mean a more accurate SNN?

The study itself (search each kernel set, pick candidates spread over the score range, train them under one
budget) is kss.tasks.proxy_study; this module works on the rows it hands over, plain dicts with every proxy
(R as `hamming`, NASWOT's R, parameter count, a random number as the floor) and the validation accuracies.

The report (kss.study.stats does the math): picks with the same genotype are collapsed into one
architecture first; every tau comes with its BCa interval, scipy's p-value and n; the pooled group
adds each proxy's partial tau given params and given the number of conv edges and the paired
difference tau(proxy) - tau(params); the single-run reliability (from the seed-noise runs) and the
ceiling it puts on any tau; best-of-k regret curves against random selection (proxy_regret.png).
`python -m kss.study.proxy DIR` recomputes all of it from a finished study's proxy.csv and proxy.json.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
from pathlib import Path

import numpy as np

from kss.errors import KssError
from kss.io import write_json
from kss.space.genotype import Genotype, conv_kernel, genotype_key
from kss.study.plots import plot_proxy, plot_regret
from kss.study.stats import (attenuation_ceiling, averaged_reliability, collapse_duplicates, partial_kendall,
                             random_regret, rank_correlations, regret_curve, reliability, tau_difference)

PROXIES = ("hamming", "naswot", "params", "random")
COVARIATES = ("params", "conv_edges")  # what "R measures size" would be: partial taus given these
SO_FAR = "proxy_so_far"  # the statistics of a study still training
PICKS = "picks.json"


def spread(items: list[dict], n: int, key: str) -> list[dict]:
    """n distinct items at evenly spaced ranks of `key`: the lowest, ..., the highest (n <= len(items))."""
    ranked = sorted(items, key=lambda r: (r[key], r["index"]))
    positions = np.unique(np.linspace(0, len(ranked) - 1, n).round().astype(int))
    return [ranked[p] for p in positions]


def coarse_to_fine(n: int) -> list[int]:
    """0 .. n-1 in an order whose every prefix spreads over the range: the two ends, then each time the
    position farthest from those taken (the lowest on a tie). Picks are in score order, so a study stopped
    part way has trained a spread of its scores, not only its lowest."""
    order = [0, n - 1][:n] if n > 1 else list(range(n))
    gap = [min(i, n - 1 - i) for i in range(n)]  # distance to the nearest position taken
    while len(order) < n:
        far = max(range(n), key=lambda i: (gap[i], -i))
        order.append(far)
        gap = [min(g, abs(i - far)) for i, g in enumerate(gap)]
    return order


def pick_spread(records: list[dict], n: int) -> list[dict]:
    """n distinct architectures at evenly spaced score ranks: the lowest, ..., the best. A genotype the search
    drew more than once counts once, with its first draw's score (not its best, which would favour it)."""
    scored = [r for r in records if r["status"] == "scored"]
    if not scored:
        raise KssError("the search scored no candidate (all over budget or non-finite); raise budget.max_params or iters")
    first_draws = {}
    for record in sorted(scored, key=lambda r: r["index"]):
        first_draws.setdefault(genotype_key(record["genotype"]), record)
    if n > len(first_draws):
        raise KssError(f"per_set={n} but the search scored only {len(first_draws)} distinct architectures "
                       f"({len(scored)} candidates); raise iters or lower per_set")
    return spread(list(first_draws.values()), n, "score")


def seed_noise_rows(rows: list[dict], seed_archs: int) -> list[tuple[str, dict]]:
    """The trained picks that get every training seed (the noise each correlation is read against): the
    top-scored and the median-scored architecture, then seed_archs - 2 more spread over the score range."""
    by_score = sorted(rows, key=lambda r: r["hamming"])
    noisy = [("top_scored", by_score[-1]), ("median_scored", by_score[len(by_score) // 2])]
    rest = [r for r in by_score if all(r is not row for _, row in noisy)]
    extra = max(0, min(seed_archs, len(rows)) - 2)
    return noisy + [(f"spread_{i}", row) for i, row in enumerate(spread(rest, extra, "hamming") if extra else [])]


def conv_edges(genotype: dict) -> int:
    """The number of conv edges of a cell (the size covariate of the partial taus)."""
    return sum(conv_kernel(op) is not None for _, _, op in Genotype.from_json(genotype).edges())


def architectures(rows: list[dict], seed_noise: dict, base_seed: int) -> list[dict]:
    """Distinct architectures, before any statistic: picks with the same genotype are one architecture
    (its proxies and accuracies averaged over the picks), `val_acc` is the mean over every training
    seed (the seed-noise runs included), `val_acc_single` the run at the study's seed, `runs` the
    accuracy per seed (the study's seed first), `kernel_sets` every set it was drawn in."""
    key = {id(r): genotype_key(r["genotype"]) for r in rows}
    runs: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        if row.get("val_acc") is not None:
            runs.setdefault(key[id(row)], {}).setdefault(base_seed, []).append(row["val_acc"])
    for noise in seed_noise.values():
        row = next((r for r in rows if (r["kernel_set"], r["index"]) == (noise["kernel_set"], noise["index"])), None)
        if row is None:
            continue
        seeds = noise.get("seeds") or [base_seed + i for i in range(len(noise["val_acc"]))]  # older proxy.json
        for s, acc in zip(seeds, noise["val_acc"]):
            if s != base_seed and acc is not None:
                runs.setdefault(key[id(row)], {}).setdefault(s, []).append(acc)
    archs = collapse_duplicates(rows, lambda r: key[id(r)], [*PROXIES, "val_acc", "val_acc_long"])
    for arch in archs:
        k = genotype_key(arch["genotype"])
        by_seed = runs.get(k, {})
        seeds = sorted(by_seed, key=lambda s: (s != base_seed, s))  # a pick the study never trained has none
        arch["runs"] = [float(np.mean(by_seed[s])) for s in seeds]  # one pick twice at one seed is one run
        arch["val_acc_single"] = arch["runs"][0] if seeds and seeds[0] == base_seed else None
        arch["val_acc"] = float(np.mean(arch["runs"])) if arch["runs"] else None
        arch["kernel_sets"] = sorted({r["kernel_set"] for r in rows if key[id(r)] == k})
        arch["conv_edges"] = conv_edges(arch["genotype"])
    return archs


def groups_of(archs: list[dict]) -> dict[str, list[dict]]:
    """pooled, then one group per kernel set (an architecture drawn in two sets is in both)."""
    sets = sorted({ks for a in archs for ks in a.get("kernel_sets", [a["kernel_set"]])})
    return {"pooled": archs} | {ks: [a for a in archs if ks in a.get("kernel_sets", [a["kernel_set"]])] for ks in sets}


def _usable(archs: list[dict], *keys: str) -> list[dict]:
    return [a for a in archs if all(a.get(k) is not None and math.isfinite(a[k]) for k in keys)]


def correlations(archs: list[dict], accuracy_key: str, resamples: int, seed: int, detail: bool = True) -> dict:
    """Per group (pooled, each kernel set) and proxy: tau and rho with BCa intervals and p-values. With
    `detail`, the pooled group adds, per proxy, its partial tau given params and given the number of
    conv edges and the paired difference tau(proxy) - tau(params). `archs` are distinct architectures
    (`architectures`)."""
    out = {}
    for group, members in groups_of(archs).items():
        members = _usable(members, accuracy_key)
        if len(members) < 3:
            continue
        out[group] = {}
        for proxy in PROXIES:
            usable = _usable(members, proxy)
            if len(usable) < 3:
                continue
            x, y = [a[proxy] for a in usable], [a[accuracy_key] for a in usable]
            stat = rank_correlations(x, y, resamples, seed)
            if detail and group == "pooled":
                for covariate in COVARIATES:
                    if covariate != proxy:
                        stat[f"given_{covariate}"] = partial_kendall(x, y, [a[covariate] for a in usable], resamples, seed)
                if proxy != "params":
                    stat["vs_params"] = tau_difference(x, y, [a["params"] for a in usable], y, resamples, seed)
            out[group][proxy] = stat
    return out


def study_reliability(archs: list[dict], resamples: int, seed: int) -> dict | None:
    """Single-run reliability of the study's accuracies (kss.study.stats.reliability), the reliability of the
    accuracies as used (seed means where there are more seeds), per group, and the tau/rho ceiling it
    puts on any proxy. The seed variance is pooled over every replicated architecture; each group's
    total variance is its own. None when no architecture has two seeds."""
    trained = [a for a in archs if a["runs"] and a["val_acc_single"] is not None]
    if len(trained) < 3 or not any(len(a["runs"]) > 1 for a in trained):
        return None
    pooled = reliability([a["runs"] for a in trained], resamples, seed)
    pooled["ceiling"] = attenuation_ceiling(pooled["reliability"])
    groups = {}
    for group, members in groups_of(trained).items():
        total = float(np.var([a["val_acc_single"] for a in members], ddof=1)) if len(members) > 1 else 0.0
        single = 1 - pooled["seed_var"] / total if total > 0 else None
        used = None if single is None else averaged_reliability(single, [len(a["runs"]) for a in members])
        groups[group] = {"n": len(members), "single_run": single, "as_used": used,
                         "ceiling": attenuation_ceiling(used)}
    return pooled | {"groups": groups}


def regret_curves(archs: list[dict], key: str = "val_acc") -> dict:
    """Best-of-k regret for k = 1..n of every proxy and of random selection (kss.study.stats.regret_curve)."""
    done = _usable(archs, key)
    curves = {"k": list(range(1, len(done) + 1)), "random_selection": random_regret([a[key] for a in done]).tolist()}
    for proxy in PROXIES:
        if len(_usable(done, proxy)) == len(done):
            curves[proxy] = regret_curve([a[proxy] for a in done], [a[key] for a in done]).tolist()
    return curves


def regret(rows: list[dict], key: str = "val_acc") -> dict:
    """The top-scored architecture's accuracy against the best trained and the median one."""
    done = [r for r in rows if r.get(key) is not None]
    top = max(done, key=lambda r: r["hamming"])
    best = max(r[key] for r in done)
    median = statistics.median(r[key] for r in done)
    return {"top_scored": {"kernel_set": top["kernel_set"], "index": top["index"], key: top[key]},
            "best": best, "median": median, "regret_vs_best": best - top[key], "gain_vs_median": top[key] - median}


def budget_check(archs: list[dict], long_epochs: int, resamples: int, seed: int) -> dict:
    """The architectures trained at both budgets (one run each, the study's seed): tau of every proxy
    at each budget, and the paired change of R's tau, long - short, with its BCa interval."""
    both = _usable(archs, "val_acc_single", "val_acc_long")
    short = [a | {"val_acc": a["val_acc_single"]} for a in both]
    out = {"n": len(both), "epochs": long_epochs, "short": {}, "long": {}, "change": None}
    if len(both) >= 3:
        out["short"] = correlations(short, "val_acc", resamples, seed, detail=False).get("pooled", {})
        out["long"] = correlations(both, "val_acc_long", resamples, seed, detail=False).get("pooled", {})
        r = [a["hamming"] for a in both]
        out["change"] = tau_difference(r, [a["val_acc_long"] for a in both], r, [a["val_acc_single"] for a in both],
                                       resamples, seed)
    return out


def study_statistics(rows: list[dict], seed_noise: dict, base_seed: int, long_epochs: int, resamples: int,
                     seed: int) -> dict:
    """Every statistic of the report, on distinct architectures (duplicates collapsed first)."""
    archs = architectures(rows, seed_noise, base_seed)
    collapsed = [{"kernel_sets": a["kernel_sets"], "index": a["index"], "copies": a["copies"]}
                 for a in archs if a["copies"] > 1]
    return {
        "n": len(archs), "n_picks": len(rows), "duplicates": collapsed,
        "correlations": correlations(archs, "val_acc", resamples, seed),
        "reliability": study_reliability(archs, resamples, seed),
        "regret": regret(archs),
        "regret_curves": regret_curves(archs),
        "budget": budget_check(archs, long_epochs, resamples, seed),
    }


def write_so_far(out_dir: Path, rows: list[dict], seed_noise: dict, settings: dict, total: int, resamples: int,
                 seed: int) -> None:
    """proxy_so_far.json / .md / _regret.png: the statistics of the trainings finished so far (rewritten after
    each new one), so a study that runs for days can be read, and a stopped one is not a blank."""
    trained = [r for r in rows if r.get("val_acc") is not None]
    if len(trained) < 3:
        return
    done = len(trained) + sum(len([s for s in noise.get("seeds", []) if s != seed]) for noise in seed_noise.values())
    result = {"settings": settings | {"bootstrap": resamples}, "trainings_done": done, "trainings_planned": total,
              **study_statistics(trained, seed_noise, seed, settings["long_epochs"], resamples, seed),
              "seed_noise": seed_noise}
    write_json(out_dir / f"{SO_FAR}.json", result)
    gap = max((len(list(run)) for untrained, run in itertools.groupby(rows, key=lambda r: r.get("val_acc") is None)
               if untrained), default=0)
    heading = (f"# Interim: {done} of {total} trainings finished\n\nThe study is not finished: these statistics are "
               f"of the {len(trained)} of {len(rows)} picks with an accuracy so far (trained in an order spread over the "
               f"score range; the longest run of picks without one, untrained or failed, in pick order (score order "
               f"within each kernel set) is {gap}), with {resamples} bootstrap resamples; proxy.md supersedes them "
               "when it ends.\n\n")
    (out_dir / f"{SO_FAR}.md").write_text(heading + summary_markdown(result, regret_png=f"{SO_FAR}_regret.png"))
    plot_regret(out_dir / f"{SO_FAR}_regret.png", result["regret_curves"], _budget_text(settings))


def write_outputs(out_dir: Path, rows: list[dict], result: dict) -> None:
    columns = ["kernel_set", "kernels", "index", "genotype", *PROXIES, "val_acc", "val_acc_long"]
    with open(out_dir / "proxy.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "kernels": json.dumps(row["kernels"]), "genotype": json.dumps(row["genotype"])})
    write_json(out_dir / "proxy.json", result)
    (out_dir / "proxy.md").write_text(summary_markdown(result))
    plot_proxy(out_dir, rows, result)
    plot_regret(out_dir / "proxy_regret.png", result["regret_curves"], _budget_text(result["settings"]))


def read_study(directory: Path) -> tuple[list[dict], dict]:
    """proxy.csv's rows (typed as run_proxy made them) and proxy.json's content."""
    rows = []
    with open(directory / "proxy.csv", newline="") as f:
        for raw in csv.DictReader(f):
            row = {"kernel_set": raw["kernel_set"], "kernels": json.loads(raw["kernels"]), "index": int(raw["index"]),
                   "genotype": json.loads(raw["genotype"])}
            for field in (*PROXIES, "val_acc", "val_acc_long"):
                row[field] = float(raw[field]) if raw.get(field) not in (None, "") else None
            rows.append(row)
    return rows, json.loads((directory / "proxy.json").read_text())


def reanalyse(directory: str | Path, name: str = "stats_rerun", resamples: int = 10_000, title: str | None = None) -> dict:
    """The report's statistics recomputed from a finished study's proxy.csv and proxy.json (no training,
    no scoring): <name>.md, <name>.json and <name>_regret.png next to them."""
    directory = Path(directory)
    rows, saved = read_study(directory)
    settings = saved["settings"]
    seed = settings.get("seed", 0)
    result = {"settings": settings | {"bootstrap": resamples},
              **study_statistics(rows, saved.get("seed_noise", {}), seed, settings["long_epochs"], resamples, seed),
              "seed_noise": saved.get("seed_noise", {})}
    title = title or (f"Re-analysis of {directory / 'proxy.csv'} with kss.study.stats: the study's own budgets, proxies and "
                      "accuracies as committed; nothing retrained or rescored.")
    write_json(directory / f"{name}.json", result)
    (directory / f"{name}.md").write_text(f"# {title}\n\n" + summary_markdown(result, regret_png=f"{name}_regret.png"))
    plot_regret(directory / f"{name}_regret.png", result["regret_curves"], _budget_text(settings))
    return result


def _budget_text(settings: dict) -> str:
    return f"{settings['epochs']} epoch(s) on {settings['train_fraction']:g} of the training split"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f}"


def _ci(value: float | None, ci: list) -> str:
    """+0.242 [-0.44, -0.05]; n/a where undefined."""
    if value is None:
        return "n/a"
    low, high = ci
    return f"{value:+.3f} [{_num(low)}, {_num(high)}]"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def summary_markdown(result: dict, regret_png: str = "proxy_regret.png") -> str:
    settings, rel = result["settings"], result.get("reliability")
    dup = result.get("duplicates", [])
    lines = [f"Validation accuracy after {_budget_text(settings)}; n = {result['n']} distinct architectures "
             f"({result.get('n_picks', result['n'])} picks"
             + (f"; {len(dup)} duplicate genotype(s) collapsed: "
                + ", ".join(f"{'+'.join(d['kernel_sets'])} #{d['index']} x{d['copies']}" for d in dup)
                + ", accuracies averaged over the runs" if dup else "") + "). "
             f"Intervals: 95% BCa bootstrap over architectures, {settings.get('bootstrap', 'n/a')} resamples. "
             "p: two-sided, scipy's kendalltau (exact without ties for small n, else asymptotic) and spearmanr "
             "(t test). Partial taus and differences of taus have no exact test: read their intervals.", ""]
    if rel is None:
        lines += ["**Reliability**: not measurable (no architecture trained with two seeds); no tau below can be "
                  "read against the noise.", ""]
    else:
        c = rel["ceiling"]
        lines += [f"**Reliability of one training run** = 1 - seed variance / variance of single runs = "
                  f"{_ci(rel['reliability'], rel['reliability_ci'])}: seed sd {100 * math.sqrt(rel['seed_var']):.1f} "
                  f"points (pooled over {rel['replicated']} architecture(s) with {', '.join(map(str, rel['seeds']))} "
                  f"seeds), sd of single runs across the {rel['n']} architectures "
                  f"{100 * math.sqrt(rel['total_var']):.1f} points. Even a perfect proxy would show at most "
                  f"tau = (2/pi) asin(sqrt(reliability)) = {_num(c['tau'])} (rho {_num(c['rho'])}) here "
                  "(Spearman's attenuation with the normal tau-r relation; an approximation, see "
                  "kss.study.stats.attenuation_ceiling). The last column uses each group's own spread and the accuracies "
                  "as used (seed means where there are more seeds).", ""]
    lines += ["| group | proxy | n | Kendall tau [95% BCa] | p | Spearman rho [95% BCa] | p | reliability -> tau ceiling |",
              "|---|---|---|---|---|---|---|---|"]
    for group, proxies in result["correlations"].items():
        g = (rel or {}).get("groups", {}).get(group)
        ceiling = "n/a" if not g or g["as_used"] is None else f"{g['as_used']:.2f} -> {g['ceiling']['tau']:.2f}"
        for proxy, stat in proxies.items():
            lines.append(f"| {group} | {proxy} | {stat['n']} | {_ci(stat['tau'], stat['tau_ci'])} | {_p(stat['tau_p'])} "
                         f"| {_ci(stat['rho'], stat['rho_ci'])} | {_p(stat['rho_p'])} | {ceiling} |")
    pooled = result["correlations"].get("pooled", {})
    if pooled:
        lines += ["", "**Is a proxy more than size?** (pooled) Kendall's partial tau with accuracy given the parameter "
                  "count and given the number of conv edges, and tau(proxy) - tau(params) on the same architectures "
                  "(paired bootstrap).", "",
                  "| proxy | n | tau | tau with params | tau with conv edges | partial tau given params [95% BCa] "
                  "| partial tau given conv edges [95% BCa] | tau - tau(params) [95% BCa] |", "|---|---|---|---|---|---|---|---|"]
        for proxy, stat in pooled.items():
            gp, ge, vs = stat.get("given_params"), stat.get("given_conv_edges"), stat.get("vs_params")
            lines.append(f"| {proxy} | {stat['n']} | {_num(stat['tau'], 3)} | {_num(gp['tau_xz'] if gp else 1.0)} "
                         f"| {_num(ge['tau_xz'] if ge else None)} | {_ci(gp['tau'], gp['tau_ci']) if gp else '-'} "
                         f"| {_ci(ge['tau'], ge['tau_ci']) if ge else '-'} "
                         f"| {_ci(vs['diff'], vs['diff_ci']) if vs else '-'} |")
    curves = result.get("regret_curves")
    if curves and curves["k"]:
        n = len(curves["k"])
        ks = sorted({k for k in (1, 2, 3, 5, 10, 20, 50, 100, n // 2, n) if 1 <= k <= n})
        names = [p for p in PROXIES if p in curves] + ["random_selection"]
        lines += ["", f"**Best-of-k regret** (accuracy points, best of all {n} minus the pick; expected over every "
                  "draw of k architectures, exact; ties in a proxy averaged; `random` is the random-number proxy, `random_selection` keeps one of the k at random). "
                  f"Figure: {regret_png}.", "",
                  "| k | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for k in ks:
            lines.append(f"| {k} | " + " | ".join(f"{100 * curves[p][k - 1]:.2f}" for p in names) + " |")
    r = result["regret"]
    lines += ["", f"Top-scored architecture ({r['top_scored']['kernel_set']} #{r['top_scored']['index']}): "
                  f"val acc {r['top_scored']['val_acc']:.4f}; best trained {r['best']:.4f} (regret "
                  f"{r['regret_vs_best']:.4f}); median {r['median']:.4f} (gain {r['gain_vs_median']:+.4f})."]
    for label, noise in result["seed_noise"].items():
        accs = noise["val_acc"]
        lines.append(f"Seed noise, {label} ({noise['kernel_set']} #{noise['index']}): {statistics.fmean(accs):.4f} +- "
                     f"{statistics.stdev(accs) if len(accs) > 1 else 0.0:.4f} over {len(accs)} training seeds.")
    b = result["budget"]
    if b.get("change"):
        ch = b["change"]
        lines += ["", f"**Budget check** ({b['n']} architectures, one run each at the study's seed, "
                      f"{settings['epochs']} vs {b['epochs']} epoch(s)): the reliability at {b['epochs']} epoch(s) was "
                      "not measured (one seed), so these taus have no ceiling.", "",
                  "| proxy | tau short [95% BCa] | p | tau long [95% BCa] | p |", "|---|---|---|---|---|"]
        for proxy in PROXIES:
            if proxy in b["short"] and proxy in b["long"]:
                s_, l_ = b["short"][proxy], b["long"][proxy]
                lines.append(f"| {proxy} | {_ci(s_['tau'], s_['tau_ci'])} | {_p(s_['tau_p'])} "
                             f"| {_ci(l_['tau'], l_['tau_ci'])} | {_p(l_['tau_p'])} |")
        lines.append(f"\nR's tau, long - short (paired, same architectures): {_ci(ch['diff'], ch['diff_ci'])}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m kss.study.proxy DIR: recompute a finished study's statistics
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=reanalyse.__doc__)
    parser.add_argument("directory")
    parser.add_argument("--name", default="stats_rerun")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--title")
    args = parser.parse_args()
    try:
        reanalyse(args.directory, args.name, args.resamples, args.title)
    except (KssError, OSError) as error:
        print(f"kss.study.proxy: {error}", file=sys.stderr)
        raise SystemExit(2) from None
