"""Guided vs random search on Fashion-MNIST (issue 19): how many trials tpe / evolution need to reach the best
R of a 5000-candidate random search, best R at 100/250/500 trials, and the (R, params) hypervolume of pareto
vs random at 500.

    # run (resumable: rerun the same command; every search resumes from its study.db), then summarise
    nice python benchmarks/guided_search.py run --reference outputs/long/fmnist_set3_random5000_seed0
    # summarise what exists so far (partial runs included), into docs/results/guided_search/
    python benchmarks/guided_search.py summarise --reference outputs/long/fmnist_set3_random5000_seed0
    # copy every run's records and study into docs/results/guided_search/runs/ (to commit partial results)
    python benchmarks/guided_search.py save --reference outputs/long/fmnist_set3_random5000_seed0

`run` first restores any run committed under docs/results/guided_search/runs/ that is missing from --out, so a
new machine continues the committed trials instead of starting over (a guided search resumes from its study.db).

Random at 100/250/500 trials comes from the reference search itself: its candidates are independent draws
(candidate i from seed (0, i)), so each block of 500 consecutive candidates is one 500-candidate random search.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import keep  # benchmarks/keep.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["experiment=fmnist_cpu", "kernel_set=set3", "wandb.mode=disabled", "progress=false", "extras=none"]
CHECKPOINTS = (100, 250, 500)


def run_dir(out: Path, strategy: str, seed: int, budget: float | None) -> Path:
    return out / (f"{strategy}_budget_seed{seed}" if budget else f"{strategy}_seed{seed}")


def jobs(args, budget: float | None) -> list[tuple[str, int, float | None]]:
    """Seed by seed, every strategy, so that partial results cover each of them."""
    order = [(s, seed, None) for seed in args.seeds for s in args.strategies]
    if args.budgeted:
        order += [(s, seed, budget) for seed in args.seeds for s in args.strategies if s != "pareto"]
    return order


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def median_params(reference: list[dict]) -> float:
    return float(statistics.median(r["params"] for r in reference))


KEPT = ("candidates.jsonl", "search.json", "search_settings.json", "study.db")


def kept_record(rel: Path) -> bool:
    """A run's records and its study (`<strategy>_seed<k>/<file>`)."""
    return len(rel.parts) == 2 and "_seed" in rel.parts[0] and rel.name in KEPT


def save(args) -> None:
    print(f"saved {keep.save(args.out, args.results / 'runs', kept_record)} files -> {args.results / 'runs'}")


def restore(args) -> None:
    print(f"restored {keep.restore(args.results / 'runs', args.out, kept_record, whole_runs=True)} files <- {args.results / 'runs'}")


def run(args) -> None:
    restore(args)
    reference = read(args.reference / "candidates.jsonl")
    budget = median_params(reference) if reference else None
    for strategy, seed, limit in jobs(args, budget):
        where = run_dir(args.out, strategy, seed, limit)
        command = [sys.executable, "search.py", *COMMON, f"iters={args.trials}", f"seed={seed}",
                   f"search.strategy={strategy}", f"hydra.run.dir={where}"]
        if limit:
            command.append(f"budget.max_params={limit:.0f}")
        print(" ".join(command), flush=True)
        result = subprocess.run(command, cwd=ROOT)
        if result.returncode != 0:
            print(f"exit {result.returncode}: {where}", flush=True)
        keep.save(where, args.results / "runs" / where.name, lambda rel: rel.name in KEPT)
        if not args.no_summary:
            summarise(args)


def best_so_far(records: list[dict], feasible_only: bool = True) -> list[float | None]:
    curve, best = [], None
    for r in records:
        if r["status"] == "scored" or (not feasible_only and r.get("score") is not None):
            best = r["score"] if best is None else max(best, r["score"])
        curve.append(best)
    return curve


def reached(curve: list, target: float) -> int | None:
    """Trials (1-based) until the best-so-far reaches `target`, or None."""
    return next((i + 1 for i, v in enumerate(curve) if v is not None and v >= target), None)


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """2-D hypervolume of (R to maximise, params to minimise) points against `ref` = (worst R, most params)."""
    front, best = [], -float("inf")
    for params, score in sorted((p, s) for s, p in points if s > ref[0] and p < ref[1]):
        if score > best:
            front.append((params, score))
            best = score
    volume = 0.0
    for k, (params, score) in enumerate(front):
        right = front[k + 1][0] if k + 1 < len(front) else ref[1]
        volume += (right - params) * (score - ref[0])
    return volume


def genotype_key(record: dict) -> str:
    # kss.space.genotype.genotype_key without importing torch into this driver: candidates.jsonl holds
    # genotypes as Genotype.to_json wrote them (canonical), so their JSON text is the key
    return json.dumps(record["genotype"], sort_keys=True)


def draws_by_genotype(reference: list[dict]) -> dict[str, list[dict]]:
    """The reference's scored records per genotype (the draws of each architecture)."""
    draws = {}
    for r in reference:
        if r["status"] == "scored":
            draws.setdefault(genotype_key(r), []).append(r)
    return draws


def redrawn_r(records: list[dict], draws: dict[str, list[dict]]) -> float | None:
    """The winner's R with the initialisation noise averaged out: the mean R of the *other* draws of the
    winner's genotype in the reference search (`draws`, draws_by_genotype; None when it drew it no other
    time). A best single draw is partly a lucky initialisation; the redrawn mean is not."""
    scored = [r for r in records if r["status"] == "scored"]
    if not scored:
        return None
    winner = max(scored, key=lambda r: r["score"])
    # a random block's records are the reference's own objects: the winning draw itself is left out
    others = [r["score"] for r in draws.get(genotype_key(winner), []) if r is not winner]
    return statistics.mean(others) if others else None


def redraw_noise(draws: dict[str, list[dict]]) -> dict:
    """How much R moves between draws of one genotype (initialisation noise): the pooled within-genotype sd
    over the genotypes the reference drew more than once."""
    repeated = [[r["score"] for r in v] for v in draws.values() if len(v) > 1]
    squares = sum(sum((x - statistics.mean(v)) ** 2 for x in v) for v in repeated)
    dof = sum(len(v) - 1 for v in repeated)
    return {"genotypes_drawn_again": len(repeated), "redraw_sd": math.sqrt(squares / dof) if dof else None}


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


def summarise(args) -> dict:
    reference = read(args.reference / "candidates.jsonl")
    if not reference:
        print(f"no reference candidates in {args.reference}", file=sys.stderr)
        return {}
    ref_curve = best_so_far(reference)
    target = ref_curve[-1]
    budget = median_params(reference)
    ref_budget = [r for r in reference if r["params"] <= budget]
    target_budget = best_so_far(ref_budget)[-1]
    blocks = [reference[b:b + args.trials] for b in range(0, len(reference) - args.trials + 1, args.trials)]
    out = {"reference": {"candidates": len(reference), "best_R": target, "median_params": budget,
                         "best_R_within_median_params": target_budget, "random_blocks_of": args.trials,
                         "random_blocks": len(blocks)},
           "random": {f"best_R_at_{n}": [best_so_far(b[:n])[-1] for b in blocks] for n in CHECKPOINTS},
           "strategies": {}}
    curves = {"random": [best_so_far(b) for b in blocks]}
    within = lambda rs: [r for r in rs if r["params"] <= budget]  # noqa: E731
    draws = draws_by_genotype(reference)
    out["random"]["redrawn_R"] = [redrawn_r(b, draws) for b in blocks]
    out["random"]["redrawn_R_budget"] = [redrawn_r(within(b), draws) for b in blocks]
    out["random"]["best_R_budget"] = [best_so_far(within(b))[-1] for b in blocks]  # of each whole block
    out["reference"] |= redraw_noise(draws)
    for strategy in [*args.strategies, *[f"{s}_budget" for s in args.strategies if s != "pareto" and args.budgeted]]:
        goal = target_budget if strategy.endswith("_budget") else target
        rows = []
        for seed in args.seeds:
            records = read(args.out / f"{strategy}_seed{seed}" / "candidates.jsonl")[: args.trials]
            if not records:
                continue
            curve = best_so_far(records)
            unique = len({genotype_key(r) for r in records})
            rows.append({"seed": seed, "trials": len(records), "unique_genotypes": unique,
                         "trials_to_reference_best": reached(curve, goal),
                         "trials_to_within_1": reached(curve, goal - 1.0),
                         **{f"best_R_at_{n}": curve[n - 1] if len(curve) >= n else None for n in CHECKPOINTS},
                         "best_R": curve[-1], "redrawn_R": redrawn_r(records, draws)})
            curves.setdefault(strategy, []).append(curve)
        out["strategies"][strategy] = rows
    # hypervolume of the (R, params) front: pareto at 500 trials vs each 500-candidate random block
    pareto_runs = {seed: read(args.out / f"pareto_seed{seed}" / "candidates.jsonl")[: args.trials] for seed in args.seeds}
    pooled = [r for rs in [*pareto_runs.values(), reference] for r in rs if r["status"] == "scored"]
    ref_point = (min(r["score"] for r in pooled), max(r["params"] for r in pooled) * 1.01)
    hv = lambda rs: hypervolume([(r["score"], r["params"]) for r in rs if r["status"] == "scored"], ref_point)  # noqa: E731
    out["hypervolume"] = {"reference_point": ref_point,
                          "pareto": {seed: hv(rs) for seed, rs in pareto_runs.items() if len(rs) == args.trials},
                          "random_blocks": [hv(b) for b in blocks]}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.results / "summary.md").write_text(markdown(args, out))
    plot(args, curves, target)
    print((args.results / "summary.md").read_text())
    return out


def redrawn_spread(values: list) -> str:
    return f"{spread(values)} ({sum(v is not None for v in values)}/{len(values)})"


def markdown(args, out: dict) -> str:
    ref = out["reference"]
    lines = [f"# Guided vs random search: Fashion-MNIST, experiment=fmnist_cpu kernel_set=set3, {args.trials} trials",
             "",
             f"Reference: random search, {ref['candidates']} candidates so far, best R {ref['best_R']:.3f}; within the "
             f"median candidate's size ({ref['median_params']:.0f} params): {ref['best_R_within_median_params']:.3f}. "
             f"Random at {args.trials}: {ref['random_blocks']} blocks of {args.trials} consecutive reference candidates.",
             "",
             f"Initialisation noise: the same genotype's R varies between draws with a pooled sd of "
             f"{ref['redraw_sd']:.2f} ({ref['genotypes_drawn_again']} genotypes the reference drew more than once). "
             "'Winner's R redrawn' is the mean R of the other draws of each winner's genotype in the reference (the "
             "noise averaged out; only winners the reference drew again count; they are few, with few draws each).",
             "",
             "| strategy | seeds done | trials to reference best R: median [min, max] (reached in) | within 1 R | "
             + " | ".join(f"best R at {n}" for n in CHECKPOINTS)
             + " | unique genotypes | winner's R redrawn (winners drawn again) |",
             "|---|---|---|---|" + "---|" * len(CHECKPOINTS) + "---|---|"]
    random_row = ["random", str(ref["random_blocks"]), "-", "-",
                  *(spread(out["random"][f"best_R_at_{n}"]) for n in CHECKPOINTS), "-",
                  redrawn_spread(out["random"]["redrawn_R"])]
    lines.append("| " + " | ".join(random_row) + " |")
    if any(name.endswith("_budget") for name in out["strategies"]):
        at_block_end = ["-"] * (len(CHECKPOINTS) - 1) + [spread(out["random"]["best_R_budget"])]
        lines.append("| " + " | ".join(["random_budget", str(ref["random_blocks"]), "-", "-", *at_block_end, "-",
                                        redrawn_spread(out["random"]["redrawn_R_budget"])]) + " |")
    for strategy, rows in out["strategies"].items():
        done = [r for r in rows if r["trials"] >= args.trials]
        hits = [r["trials_to_reference_best"] for r in done if r["trials_to_reference_best"] is not None]
        near = [r["trials_to_within_1"] for r in done if r["trials_to_within_1"] is not None]
        reach = f"{spread(hits)} ({len(hits)}/{len(done)})" if done else "-"
        close = f"{spread(near)} ({len(near)}/{len(done)})" if done else "-"
        lines.append("| " + " | ".join([strategy, f"{len(done)} (+{len(rows) - len(done)} running)", reach, close,
                                        *(spread([r[f"best_R_at_{n}"] for r in rows]) for n in CHECKPOINTS),
                                        spread([r["unique_genotypes"] for r in done]),
                                        redrawn_spread([r.get("redrawn_R") for r in done])]) + " |")
    hv = out["hypervolume"]
    if hv["pareto"]:
        lines += ["", f"Hypervolume of the (R, params) front at {args.trials} trials (reference point R "
                  f"{hv['reference_point'][0]:.1f}, {hv['reference_point'][1]:.0f} params):",
                  "- pareto, per seed: " + ", ".join(f"seed {s}: {v:.4g}" for s, v in hv["pareto"].items()),
                  f"- random, per {args.trials}-candidate block: {spread(hv['random_blocks'])} (median [min, max])"]
        # the target is "larger in every seed": seed i against the i-th random block (independent draws, so a
        # fair pairing), and each seed against all blocks for how much luck the pairing carries
        blocks = hv["random_blocks"]
        paired = {s: v > blocks[int(s)] for s, v in hv["pareto"].items() if int(s) < len(blocks)}
        lines += [f"- paired (seed i vs block i): pareto larger in {sum(paired.values())} of {len(paired)} seeds; "
                  "share of all blocks each seed beats: "
                  + ", ".join(f"seed {s}: {sum(v > b for b in blocks)}/{len(blocks)}" for s, v in hv["pareto"].items())]
    return "\n".join(lines) + "\n"


def plot(args, curves: dict, target: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for (name, runs), colour in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        if name.endswith("_budget") or not runs:
            continue
        n = min(len(c) for c in runs)
        values = np.array([[v if v is not None else np.nan for v in c[:n]] for c in runs])
        x = np.arange(1, n + 1)
        ax.plot(x, np.nanmedian(values, axis=0), color=colour, label=f"{name} (median of {len(runs)})")
        ax.fill_between(x, np.nanmin(values, axis=0), np.nanmax(values, axis=0), color=colour, alpha=0.2)
    ax.axhline(target, color="black", ls=":", label="best R of the random reference")
    ax.set(xlabel="trials (candidates)", ylabel="best R so far", title="Fashion-MNIST, set3: best-so-far R (range over seeds)")
    ax.set_xlim(1, args.trials)
    ax.set_ylim(target - 30, target + 3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.results / "best_so_far.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "summarise", "save"])
    parser.add_argument("--reference", type=Path, required=True, help="run directory of the random reference search")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "guided")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results" / "guided_search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--strategies", nargs="+", default=["tpe", "evolution", "pareto"])
    parser.add_argument("--budgeted", action="store_true", help="also tpe/evolution with budget.max_params = the "
                        "reference's median candidate size")
    parser.add_argument("--no-summary", action="store_true", help="run: do not summarise after each search "
                        "(when several workers each run some of the strategies)")
    args = parser.parse_args()
    {"run": run, "summarise": summarise, "save": save}[args.what](args)


if __name__ == "__main__":
    main()
