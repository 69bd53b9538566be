"""The long Fashion-MNIST studies of issue 20, resumable across machines.

    python benchmarks/fmnist_studies.py calibrate    # (a) reliability per budget: 12 set3 archs x 2 seeds at 0.3/1/3 epochs
    python benchmarks/fmnist_studies.py proxy        # (b) >= 60 set3 archs at the calibrated budget, 10 of them at 3 seeds
    python benchmarks/fmnist_studies.py select       # (c) halving winners (whole rungs; Optuna's async pruner) vs R-argmax
                                                     #     of 500 vs random vs smallest vs largest
    python benchmarks/fmnist_studies.py status       # what is finished, what is left, and the command that continues
    python benchmarks/fmnist_studies.py save         # copy every finished record to docs/results now (before a stop),
                                                     #     and the selection table of the final trainings so far
    python benchmarks/fmnist_studies.py save --checkpoints   # ... and the checkpoints of the trainings still running
    (add --dry-run to print the commands instead of running them)

Each study runs the project's own scripts (proxy.py, search.py, train.py) as subprocesses into
outputs/fmnist_studies/<study>/ (fixed run directories, so a rerun resumes). While a step runs and when it
ends, every finished record (metrics.json of each training, search.json / candidates.jsonl /
search_settings.json / study.db of each search, picks.json, the study tables) is copied to
docs/results/<study>/ under the same relative path; before running, what is there and missing locally is
copied back. So a new machine (a fresh checkout) continues from the committed files: finished trainings are
reported from their metrics.json, searches resume from their candidates or study, and only unfinished
trainings run again: from scratch, or, when `save --checkpoints` carried their checkpoints at the last stop,
from their last finished epoch (with a fresh data order from there; the carried checkpoints are deleted from
docs/results by the first save after the training finishes).

--preset synthetic runs the same plan on the synthetic dataset with tiny budgets (the tests use it).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import keep  # benchmarks/keep.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
STUDIES = {"calibrate": "fmnist_calibration", "proxy": "fmnist_proxy60", "select": "fmnist_selection"}
SAVED = ("metrics.json", "search.json", "search_settings.json", "candidates.jsonl", "picks.json", "calibration.json",
         "calibration.md", "calibration.png", "calibration_so_far.md", "calibration_so_far.json", "calibration_so_far.png",
         "proxy.json", "proxy.md", "proxy.csv", "proxy.png", "proxy_ranks.png", "proxy_regret.png", "proxy_so_far.json",
         "proxy_so_far.md", "proxy_so_far_regret.png", "halving.md",
         "selection.json", "selection.md", "selection.png", "selection_so_far.json", "selection_so_far.md",
         "selection_so_far.png")
SKIPPED_DIRS = ("checkpoints", "csv", "wandb", "tensorboard", ".hydra")
SYNC_SECONDS = 60

PRESETS = {
    "fmnist": {
        "common": ["experiment=fmnist_cpu", "wandb.mode=disabled", "progress=false", "extras=none"],
        "kernel_set": "set3",
        "calibration": ["iters=200", "proxy.calibration.archs=12", "proxy.calibration.seeds=2",
                        "proxy.calibration.budgets=[0.3,1,3]"],
        "proxy": ["iters=500", "proxy.per_set=64", "proxy.seeds=3", "proxy.seed_archs=10", "proxy.long_archs=0"],
        "r_iters": 500,
        "halving": ["search.halving.pool=27", "search.halving.eta=3", "search.halving.budgets=[0.111,0.333,1,3]"],
        "final": ["trainer.max_epochs=2", "scheduler=cosine_steps"],  # annealed to the end: less seed noise
        "seeds": [0, 1, 2],
    },
    "synthetic": {  # the plan in miniature, for tests: synthetic data, tiny model, fractions of an epoch
        "common": ["dataset=synthetic", "model=tiny", "dataset.train_size=96", "dataset.val_size=32", "score.batch_size=32",
                   "dataset.test_size=16", "optimizer=adam", "optimizer.lr=1e-2", "callbacks=none", "device=cpu",
                   "wandb.mode=disabled", "progress=false", "extras=none"],
        "kernel_set": "set3",
        "calibration": ["iters=6", "proxy.calibration.archs=3", "proxy.calibration.seeds=2",
                        "proxy.calibration.budgets=[0.25,0.5]", "proxy.bootstrap=50"],
        "proxy": ["iters=8", "proxy.per_set=3", "proxy.seeds=2", "proxy.seed_archs=3", "proxy.long_archs=0",
                  "proxy.bootstrap=50"],
        "r_iters": 8,
        "halving": ["search.halving.pool=2", "search.halving.eta=2", "search.halving.budgets=[0.25,0.5]"],
        "final": ["trainer.max_epochs=1", "scheduler=cosine_steps"],
        "seeds": [0, 1],
    },
}
# halving: whole rungs (27 -> 9 -> 3 -> 1, the plan); halving_asha: Optuna's asynchronous pruner as it is, the
# first halving run (its winner, trial 0, was promoted from the second-worst accuracy of rung 0)
METHODS = ("halving", "halving_asha", "r_argmax", "random", "smallest", "largest")
HALVING_DIRS = {"halving": "halving_sync", "halving_asha": "halving"}


class Step:
    """One command of a study: its script, its arguments, its run directory and the file that marks it done."""

    def __init__(self, name: str, script: str, args: list[str], run_dir: Path, done_file: str):
        self.name, self.script, self.args, self.run_dir, self.done_file = name, script, args, run_dir, done_file

    @property
    def done(self) -> bool:
        return (self.run_dir / self.done_file).exists()

    def argv(self) -> list[str]:
        return [sys.executable, f"{self.script}.py", *self.args, f"hydra.run.dir={self.run_dir}"]


# --- saving to and restoring from docs/results/<study>/ (benchmarks/keep.py) ---

def kept_record(rel: Path) -> bool:
    return not any(part in SKIPPED_DIRS for part in rel.parts) and (
        rel.name in SAVED or rel.name == "study.db" or rel.parent.name == "genotypes")


def save(out: Path, results: Path) -> int:
    """Copy every finished record under `out` to `results` (new or changed files), and delete the carried
    checkpoints of trainings that have finished; returns how many records were copied."""
    copied = keep.save(out, results, kept_record)
    keep.prune_checkpoints(out, results)
    return copied


def restore(results: Path, out: Path) -> int:
    """Copy what `results` holds and `out` lacks back into `out` (never over a local file); returns how many."""
    return keep.restore(results, out, kept_record)


# --- the studies' plans ---

def calibrate_plan(args, preset: dict) -> list[Step]:
    out = args.out / STUDIES["calibrate"]
    return [Step("calibration", "proxy", [*preset["common"], f"kernel_sets=[{preset['kernel_set']}]", "proxy.calibrate=true",
                                          "name=fmnist_calibration", *preset["calibration"]], out, "calibration.json")]


def calibration_of(path: Path, preset: dict) -> dict | None:
    """A calibration result (calibration.json or calibration_so_far.json) of this preset's settings; one
    of other settings (an earlier calibration into the same folder) is refused in one line."""
    if not path.exists():
        return None
    result = json.loads(path.read_text())
    wanted = overrides(preset["calibration"])
    settings = result.get("settings", {})
    if ([float(b) for b in settings.get("budgets", [])] != [float(b) for b in wanted["proxy.calibration.budgets"]]
            or settings.get("archs") != wanted["proxy.calibration.archs"]
            or settings.get("seeds") != wanted["proxy.calibration.seeds"]):
        raise SystemExit(f"{path} is a calibration of other settings ({settings.get('archs')} archs x "
                         f"{settings.get('seeds')} seeds at {settings.get('budgets')}); move it away or pass --epochs")
    return result


def calibrated_budget(args, preset: dict) -> list[str]:
    """proxy.epochs / proxy.train_fraction: given, or the calibration's cheapest budget with reliability >= 0.7."""
    if args.epochs is not None:
        return [f"proxy.epochs={args.epochs}", f"proxy.train_fraction={args.fraction}"]
    for where in (args.out / STUDIES["calibrate"], args.results / STUDIES["calibrate"]):
        if result := calibration_of(where / "calibration.json", preset):
            cheapest = result["cheapest"]
            if cheapest is None:
                raise SystemExit("the calibration found no budget with reliability >= its target; pass --epochs and "
                                 "--fraction to run the proxy study anyway")
            return cheapest["overrides"].split()
    for where in (args.out / STUDIES["calibrate"], args.results / STUDIES["calibrate"]):
        # budgets are calibrated cheapest first, so a budget that already passed is the answer; the longer
        # budgets only add rows to the table
        if (result := calibration_of(where / "calibration_so_far.json", preset)) and result["cheapest"]:
            return result["cheapest"]["overrides"].split()
    raise SystemExit("no calibrated budget yet: run `calibrate` first (the proxy study can start once a budget "
                     "reaches the target), or pass --epochs N --fraction F")


def proxy_plan(args, preset: dict) -> list[Step]:
    out = args.out / STUDIES["proxy"]
    return [Step("proxy study", "proxy", [*preset["common"], f"kernel_sets=[{preset['kernel_set']}]", "name=fmnist_proxy60",
                                          *preset["proxy"], *calibrated_budget(args, preset)], out, "proxy.json")]


def select_search_plan(args, preset: dict) -> list[Step]:
    out = args.out / STUDIES["select"]
    common = [*preset["common"], f"kernel_set={preset['kernel_set']}"]
    halving = [*common, "search.strategy=halving", *preset["halving"]]
    return [Step("R search", "search", [*common, f"iters={preset['r_iters']}"], out / "search_r", "search.json"),
            Step("halving (Optuna's async pruner)", "search", [*halving, "search.halving.mode=async"],
                 out / HALVING_DIRS["halving_asha"], "search.json"),
            Step("halving (whole rungs)", "search", [*halving, "search.halving.mode=sync"],
                 out / HALVING_DIRS["halving"], "search.json")]


def reuse_rungs(out: Path) -> int:
    """The whole-rung halving trains the same pool at the same budgets and seed as the async one, whose finished
    rung trainings are therefore the ones it would run (CPU training is deterministic): their metrics.json are
    copied in, and train.py recognises each as finished (the same cell, by another path). Returns how many."""
    copied = 0
    source, target = out / HALVING_DIRS["halving_asha"] / "rungs", out / HALVING_DIRS["halving"] / "rungs"
    for metrics in sorted(source.glob("*/metrics.json")) if source.exists() else []:
        if keep.finished_training(metrics) and not (target / metrics.parent.name / "metrics.json").exists():
            keep.copy_file(metrics, target / metrics.parent.name / "metrics.json")
            copied += 1
    return copied


def selected_genotypes(args) -> dict[str, Path]:
    """The five architectures compared: the halving winner (its search.json), the R-argmax, a random
    candidate (seeded), the smallest and the largest scored candidate of the R search (genotype files)."""
    import numpy as np

    out = args.out / STUDIES["select"]
    records = [json.loads(line) for line in (out / "search_r" / "candidates.jsonl").read_text().splitlines() if line]
    scored = [r for r in records if r["status"] == "scored"]
    picks = {"r_argmax": max(scored, key=lambda r: (r["score"], -r["index"])),
             "random": scored[int(np.random.default_rng(20).integers(len(scored)))],
             "smallest": min(scored, key=lambda r: (r["params"], r["index"])),
             "largest": max(scored, key=lambda r: (r["params"], -r["index"]))}
    files = {name: out / folder / "search.json" for name, folder in HALVING_DIRS.items()}
    for name, record in picks.items():
        path = out / "genotypes" / f"{name}.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record["genotype"] | {"source_index": record["index"]}, indent=2) + "\n")
        files[name] = path
    return files


def select_final_plan(args, preset: dict) -> list[Step]:
    out = args.out / STUDIES["select"]
    files = selected_genotypes(args)
    common = [*preset["common"], f"kernel_set={preset['kernel_set']}", *preset["final"]]
    return [Step(f"{name} seed {seed}", "train", [*common, f"genotype={files[name]}", f"seed={seed}"],
                 out / "final" / f"{name}_seed{seed}", "metrics.json")
            for seed in preset["seeds"] for name in METHODS]


def selection_summary(args, preset: dict) -> dict:
    """Test accuracy per method (mean, sd over seeds), paired differences against the halving winner."""
    import numpy as np

    from kss.study.stats import paired_difference

    out = args.out / STUDIES["select"]
    halvings = {name: json.loads((out / folder / "search.json").read_text()) for name, folder in HALVING_DIRS.items()}
    halving = halvings["halving"]
    search = json.loads((out / "search_r" / "search.json").read_text())
    rows = {}
    for name in METHODS:
        runs = [json.loads(p.read_text()) for seed in preset["seeds"]
                if (p := out / "final" / f"{name}_seed{seed}" / "metrics.json").exists()]
        accs = [r["test_acc"] for r in runs]
        rows[name] = {"seeds": [r["seed"] for r in runs], "test_acc": accs, "params": runs[0]["params"] if runs else None,
                      "mean": float(sum(accs) / len(accs)) if accs else None,
                      "sd": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                      # the trained network's firing rates differ by seed, so its energy does too
                      "energy_uj": float(np.mean(e)) if (e := [r["energy_uj"] for r in runs if r.get("energy_uj")]) else None}
    diffs = {}
    for name in METHODS[1:]:
        a, b = rows[name], rows["halving"]  # against the planned method: whole rungs
        common = sorted(set(a["seeds"]) & set(b["seeds"]))
        if len(common) >= 2:
            pick = lambda row: [row["test_acc"][row["seeds"].index(s)] for s in common]  # noqa: E731
            diffs[name] = paired_difference(pick(a), pick(b))
    return {"dataset": halving.get("dataset"), "kernel_set": halving.get("kernel_set"), "methods": rows,
            "minus_halving": diffs, "final_training": preset["final"],
            "trainings_done": sum(len(row["seeds"]) for row in rows.values()),
            "trainings_planned": len(METHODS) * len(preset["seeds"]),
            "winners": {name: h.get("best_index") for name, h in halvings.items()},
            "selection_cost": {**{f"{name}_training_epochs": h["training_epochs"] for name, h in halvings.items()},
                               **{f"{name}_train_seconds": h["search_seconds"] for name, h in halvings.items()},
                               "r_search_seconds": search["search_seconds"], "r_search_candidates": search["iters"]}}


def selection_markdown(summary: dict) -> str:
    done, planned = summary.get("trainings_done"), summary.get("trainings_planned")
    interim = ([f"**Interim: {done} of {planned} final trainings finished**; a difference is paired over the seeds "
                "both methods have so far.", ""] if done is not None and done < planned else [])
    lines = [f"# Selection ({summary['dataset']}, {summary['kernel_set']}): which architecture trains best?", "", *interim,
             f"Each architecture trained with the same final budget ({' '.join(summary['final_training'])}) and the "
             "seeds listed; **test** accuracy (the selections saw only validation accuracy or nothing). Selection cost: "
             f"halving by whole rungs {summary['selection_cost']['halving_training_epochs']:.2f} training epochs "
             f"({summary['selection_cost']['halving_train_seconds'] / 60:.0f} min, winner candidate "
             f"{summary['winners']['halving']}), halving by Optuna's asynchronous pruner "
             f"{summary['selection_cost']['halving_asha_training_epochs']:.2f} training epochs "
             f"({summary['selection_cost']['halving_asha_train_seconds'] / 60:.0f} min, winner candidate "
             f"{summary['winners']['halving_asha']}; the two share their rung trainings), R search of "
             f"{summary['selection_cost']['r_search_candidates']} candidates "
             f"({summary['selection_cost']['r_search_seconds'] / 60:.0f} min).", "",
             "| method | params | energy per image (uJ, mean over seeds) | seeds | test acc mean | sd | minus halving (paired) | p |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in summary["methods"].items():
        d = summary["minus_halving"].get(name)
        mean = "n/a" if row["mean"] is None else f"{100 * row['mean']:.2f}"
        sd = "n/a" if row["sd"] is None else f"{100 * row['sd']:.2f}"
        diff = "-" if d is None else f"{100 * d['mean_diff']:+.2f} ± {100 * d['std_diff']:.2f}"
        p = "-" if d is None else f"{d['p_value']:.2g}"
        params = "n/a" if row["params"] is None else row["params"]
        energy = "n/a" if row["energy_uj"] is None else f"{row['energy_uj']:.1f}"
        lines.append(f"| {name} | {params} | {energy} | {len(row['seeds'])} | {mean} | {sd} | {diff} | {p} |")
    return "\n".join(lines) + "\n"


# --- running ---

def run_step(step: Step, args, study: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {step.name}: {' '.join(step.argv()[1:])}", flush=True)
    if args.dry_run:
        return
    process = subprocess.Popen(step.argv(), cwd=ROOT)
    try:
        while process.poll() is None:
            time.sleep(args.sync_seconds)
            save(args.out / study, args.results / study)
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    finally:
        save(args.out / study, args.results / study)
    if process.returncode != 0:
        raise SystemExit(f"{step.name} failed (exit {process.returncode}); rerun the same command to resume")


def run_steps(steps: list[Step], args, study: str, after=None) -> None:
    """Each step not yet done, then `after()` (when given) once it has run."""
    for step in steps:
        if step.done:
            print(f"{step.name}: done ({step.run_dir / step.done_file})")
        else:
            run_step(step, args, study)
            if after and not args.dry_run:
                after()


def write_selection(args, preset: dict) -> Path | None:
    """selection.md/.json once every final training is finished, selection_so_far.md/.json before (from the
    finished ones), written into the study's output folder and saved to docs/results like every record (so a
    sync never copies an older table back over it); None while the searches run or before any final training."""
    from kss.study.plots import plot_accuracy_energy

    out = args.out / STUDIES["select"]
    if not all(s.done for s in select_search_plan(args, preset)) or not any((out / "final").glob("*/metrics.json")):
        return None
    summary = selection_summary(args, preset)
    finished = summary["trainings_done"] == summary["trainings_planned"]
    name = "selection" if finished else "selection_so_far"
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / f"{name}.md").write_text(selection_markdown(summary))
    plot_accuracy_energy(out / f"{name}.png", [{"label": method, **row} for method, row in summary["methods"].items()],
                         f"selection ({summary['dataset']}, {summary['kernel_set']}): each pick trained "
                         f"{' '.join(summary['final_training'])}")
    if finished:  # the interim table is superseded
        for stale in (f"selection_so_far.{ext}" for ext in ("json", "md", "png")):
            for folder in (out, args.results / STUDIES["select"]):
                (folder / stale).unlink(missing_ok=True)
    save(out, args.results / STUDIES["select"])
    return args.results / STUDIES["select"] / f"{name}.md"


def interim_selection(args, preset: dict) -> None:
    """After each final training: the table so far; a failure here is reported, never stops the trainings."""
    try:
        write_selection(args, preset)
    except Exception as error:  # an interim table must not end hours of training
        print(f"warning: the interim selection table failed ({type(error).__name__}: {error}); the trainings go on",
              file=sys.stderr, flush=True)


def plan_of(args, preset: dict, study: str) -> list[Step]:
    if study == "calibrate":
        return calibrate_plan(args, preset)
    if study == "proxy":
        return proxy_plan(args, preset)
    steps = select_search_plan(args, preset)
    if all(s.done for s in steps):
        steps += select_final_plan(args, preset)
    return steps


# --- how much is left ---

def overrides(items: list[str]) -> dict:
    """`key=value` overrides as a dict of Python values ("proxy.calibration.budgets=[0.3,1,3]" -> [0.3, 1, 3],
    "scheduler=cosine_steps" -> "cosine_steps")."""
    def value(text: str):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return {k: value(v) for k, v in (item.split("=", 1) for item in items)}


def planned_epochs(args, preset: dict, study: str) -> float | None:
    """Training epochs the study's plan takes in all (halving: its synchronous count; Optuna's asynchronous
    pruner trains somewhat more); None while the proxy study waits for its budget."""
    if study == "calibrate":
        o = overrides(preset["calibration"])
        return o["proxy.calibration.archs"] * o["proxy.calibration.seeds"] * sum(o["proxy.calibration.budgets"])
    if study == "proxy":
        try:
            budget = overrides(calibrated_budget(args, preset))
        except SystemExit:
            return None
        o = overrides(preset["proxy"])
        trainings = o["proxy.per_set"] + o["proxy.seed_archs"] * (o["proxy.seeds"] - 1)
        return trainings * budget["proxy.epochs"] * budget["proxy.train_fraction"]
    o = overrides(preset["halving"])
    eta, budgets = o["search.halving.eta"], o["search.halving.budgets"]
    halving = sum(o["search.halving.pool"] / eta ** rung * b for rung, b in enumerate(budgets))
    # both halvings (the whole-rung one mostly reuses the async one's rungs; counted in full here)
    return 2 * halving + len(METHODS) * len(preset["seeds"]) * overrides(preset["final"])["trainer.max_epochs"]


def trainings(folder: Path) -> list[tuple[float, float]]:
    """(epochs, seconds) of each finished training under `folder`, once however many copies (reuse_rungs).
    A fractional budget's run is named by kss.tasks.fidelity.budget_tag (`_e1_f0.3`: one epoch on 30% of the
    batches)."""
    done, seen = [], set()
    for path in sorted(folder.rglob("metrics.json")):
        text = path.read_text()
        m = json.loads(text)
        if m.get("train_seconds") is None or (path.parent.name, text) in seen:  # a copy keeps its run's name
            continue
        seen.add((path.parent.name, text))
        tag = re.search(r"_e(\d+)_f([\d.]+)", path.parent.name)
        done.append((int(tag[1]) * float(tag[2]) if tag else m["epochs"], m["train_seconds"]))
    return done


def trained(folder: Path) -> tuple[float, float]:
    """(epochs, seconds) of the finished trainings under `folder`, in all."""
    done = trainings(folder)
    return sum(e for e, _ in done), sum(s for _, s in done)


def seconds_per_epoch(folder: Path) -> float | None:
    """The pace of the trainings of at least one epoch (what is left is mostly those; a short budget's fixed
    costs, its validation pass and start-up, would overstate it), else of all trainings; None before any."""
    done = trainings(folder)
    long = [(e, s) for e, s in done if e >= 1] or done
    epochs = sum(e for e, _ in long)
    return sum(s for _, s in long) / epochs if epochs > 0 else None


def left_line(args, preset: dict, study: str) -> str:
    planned = planned_epochs(args, preset, study)
    done, _ = trained(args.out / STUDIES[study])
    if planned is None:
        return ""
    line = f"; {done:.1f} of ~{planned:.0f} epochs trained"
    if per_epoch := seconds_per_epoch(args.out / STUDIES[study]):
        line += (f" at {per_epoch / 60:.0f} min per epoch so far: "
                 f"~{max(planned - done, 0) * per_epoch / 3600:.1f} h left at that pace (rough: the pace of the "
                 "trainings of >= 1 epoch when there are any; a resumed run's earlier sessions are not counted)")
    return line


def interim_line(folder: Path) -> str:
    """R's and the parameter count's tau so far, from the proxy study's interim report (when it wrote one)."""
    if not (path := folder / "proxy_so_far.json").exists():
        return ""
    result = json.loads(path.read_text())
    pooled = result["correlations"].get("pooled", {})
    shown = [f"tau({name}) {stat['tau']:+.2f} [{stat['tau_ci'][0]:+.2f}, {stat['tau_ci'][1]:+.2f}]"
             for name, stat in pooled.items() if name in ("hamming", "params")
             and stat["tau"] is not None and None not in stat["tau_ci"]]
    return f"; so far on {result['n']} architectures: {', '.join(shown) or 'no tau yet'} (proxy_so_far.md)"


def status(args, preset: dict) -> None:
    for study, folder in STUDIES.items():
        restore(args.results / folder, args.out / folder)
        try:
            steps = plan_of(args, preset, study)
        except SystemExit as why:
            print(f"{study}: waiting ({why})")
            continue
        done = sum(s.done for s in steps)
        more = " (then the final trainings)" if study == "select" and len(steps) == len(select_search_plan(args, preset)) else ""
        trainings = len(list((args.out / folder).rglob("metrics.json")))
        carried = len(list((args.results / folder).rglob(keep.CHECKPOINTS)))
        more += f"; {carried} unfinished training(s) carry a checkpoint in {args.results / folder}" if carried else ""
        head = f"{study}: {done} of {len(steps)} steps done{more}; {trainings} finished trainings in {args.out / folder}"
        if done == len(steps):
            print(f"{head}; finished (records in {args.results / folder})")
            continue
        print(f"{head}{left_line(args, preset, study)}{interim_line(args.out / folder) if study == 'proxy' else ''}; "
              f"continue with: python benchmarks/fmnist_studies.py {study}" + ("" if args.preset == "fmnist" else
                                                                                f" --preset {args.preset}"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=[*STUDIES, "status", "save"])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "fmnist_studies")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    parser.add_argument("--preset", choices=list(PRESETS), default="fmnist")
    parser.add_argument("--epochs", type=int, help="proxy: proxy.epochs instead of the calibrated budget")
    parser.add_argument("--fraction", type=float, default=1.0, help="proxy: proxy.train_fraction with --epochs")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--checkpoints", action="store_true",
                        help="save: also carry the checkpoints of unfinished trainings (resumed on a new machine)")
    parser.add_argument("--sync-seconds", type=float, default=SYNC_SECONDS)
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    if args.study == "status":
        status(args, preset)
        return
    if args.study == "save":  # the runners save every minute; this is for the last minute before a stop
        for folder in STUDIES.values():
            print(f"saved {save(args.out / folder, args.results / folder)} file(s) to {args.results / folder}")
            carried = keep.carry_checkpoints(args.out / folder, args.results / folder) if args.checkpoints else 0
            if carried:
                print(f"carried {carried} checkpoint file(s) of unfinished trainings to {args.results / folder}")
        if table := write_selection(args, preset):
            print(f"wrote {table}")
        return
    folder = STUDIES[args.study]
    print(f"restored {restore(args.results / folder, args.out / folder)} file(s) and "
          f"{keep.restore_checkpoints(args.results / folder, args.out / folder)} carried checkpoint(s) "
          f"from {args.results / folder}")
    if args.study == "select":
        r_search, asha, whole_rungs = select_search_plan(args, preset)
        run_steps([r_search, asha], args, folder)
        if not args.dry_run:
            print(f"reused {reuse_rungs(args.out / folder)} finished rung training(s) of the async halving")
        run_steps([whole_rungs], args, folder)
        if args.dry_run and not all(s.done for s in select_search_plan(args, preset)):
            print(f"then: the final trainings of {', '.join(METHODS)} x seeds {preset['seeds']} "
                  f"({' '.join(preset['final'])})")
            return
        run_steps(select_final_plan(args, preset), args, folder, after=lambda: interim_selection(args, preset))
        if not args.dry_run:
            print(f"wrote {write_selection(args, preset)}")
    else:
        run_steps(plan_of(args, preset, args.study), args, folder)
        if not args.dry_run:
            save(args.out / folder, args.results / folder)


if __name__ == "__main__":
    main()
