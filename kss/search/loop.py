"""Training-free random search: sample a genotype, build it, score it at init; the best R wins.

Outputs in the run directory (the contract sweeps and dashboards read):
- candidates.jsonl: one line per candidate, appended (and flushed) as soon as it is done;
- search.json: the summary, written when the search ends;
- search_settings.json: what the search depends on, so a rerun in the same directory
  resumes only a search with the same settings.

Candidate i is drawn and initialised from seeds derived from (seed, i) alone, so a resumed
search ends exactly where an uninterrupted one would, and a sharded one (kss.search.shards: shards=N
shard=K) where an unsharded one would.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from kss.errors import KssError
from kss.io import write_json
from kss.names import BUDGETS, setting_tag
from kss.runlock import run_lock
from kss.search import guided
from kss.search.candidate import evaluate_candidate, winner_cost
from kss.search.progress import interruptible, say_how_long
from kss.search.records import CANDIDATES, SUMMARY, check_settings, read_candidates, record_settings
from kss.search.score import SCORE_VERSION, check_precision
from kss.search.setup import SearchSetup, scoring_allocator, use_fused, uses_allocator
from kss.space.cost import COST_KEYS, cost_table_record
from kss.space.genotype import Genotype
from kss.space.params import memory_bytes

log = logging.getLogger(__name__)


def summarize(setup: SearchSetup, records: list[dict], device, cost: dict | None = None) -> dict:
    scored = [r for r in records if r["status"] == "scored"]
    best = max(scored, key=lambda r: r["score"], default=None)  # ties: the earliest candidate
    seconds = sum(r["seconds"] for r in records)
    summary = {
        "kernel_set": setup.kernel_set,
        "kernels": setup.kernels,
        "setting": setting_tag(setup.kernels, setup.iters),
        "cell_type": setup.spec.cell_type,
        "iters": setup.iters,
        "seed": setup.seed,
        "dataset": setup.dataset,
        "score_kind": setup.score,
        "precision": setup.precision,
        "layout": setup.effective_layout(),
        "cudnn_benchmark": setup.cudnn_benchmark and device.type == "cuda",
        "fused": use_fused(setup, device),
        "allocator": uses_allocator(setup, device),
        "best_index": best["index"] if best else None,
        "best_genotype": best["genotype"] if best else None,
        "best_score": best["score"] if best else None,
        "params": best["params"] if best else None,
        **memory_bytes(best["params"] if best else 0),
        "search_seconds": seconds,
        "candidates_per_second": len(records) / seconds if seconds else None,
        "candidates_scored": len(scored),
        "candidates_skipped": sum(r["status"] == "over_budget" for r in records),
        "candidates_over_budget": {name: sum(r.get("exceeds", "max_params" if r["status"] == "over_budget" else None) == name
                                             for r in records) for name in BUDGETS},
        "candidates_non_finite": sum(r["status"] == "non_finite" for r in records),
        "max_params": setup.max_params,
        "max_energy_uj": setup.max_energy_uj,
        "max_sops": setup.max_sops,
        **(cost or {}),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "model": asdict(setup.spec),
        "neuron": asdict(setup.neuron),
        "batch_size": setup.batch_size,
        "repeats": setup.repeats,
        "carry_state": setup.carry_state,
        "score_version": SCORE_VERSION,
        "torch": torch.__version__,
        "host": platform.node(),
    }
    if setup.strategy != "random":  # no new key in a random search's search.json
        summary |= guided.summary_fields(setup, records)
    return summary


def search(setup: SearchSetup, data, out_dir: Path, device=None, progress: bool = True, lock_wait: bool = False) -> dict:
    """Run (or resume, or just report) the search in `out_dir`; returns search.json's content."""
    with run_lock(out_dir, lock_wait):
        return _search(setup, data, Path(out_dir), device or torch.device("cpu"), progress)


def _search(setup: SearchSetup, data, out_dir: Path, device, progress: bool) -> dict:
    check_settings(out_dir, setup)
    candidates_path = out_dir / CANDIDATES
    records = read_candidates(candidates_path)[: setup.iters]
    if len(records) == setup.iters:
        log.info("%s: already finished (%d of %d candidates); reporting it", out_dir, len(records), setup.iters)
    elif records:
        log.info("resuming %s: %d of %d candidates already done", out_dir, len(records), setup.iters)
    batches = []
    if len(records) < setup.iters:
        batches = [b.to(device) for b in data.search_batches(setup.batch_size, setup.repeats, setup.seed)]
        # The candidates seed torch themselves; the caller's random state (e.g. the training
        # run that follows) must not depend on whether there was any search left to do.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            scorer(setup)(setup, batches, device, progress, records, candidates_path)
    summary = summarize(setup, records, device, known_winner_cost(setup, data, out_dir, records, batches, device))
    write_json(out_dir / SUMMARY, summary)
    report_best(summary)
    return summary


def scorer(setup: SearchSetup):
    """What scores the remaining candidates: score_candidates (random) or kss.search.guided's trial loop."""
    return score_candidates if setup.strategy == "random" else guided.score_trials


def report_best(summary: dict) -> None:
    """Log the winner, or fail in one line when there is none."""
    if summary["best_genotype"] is None:
        over = [f"budget.{name}" for name, count in summary["candidates_over_budget"].items() if count]
        fix = f"raise {' or '.join(over)}" if over else "check the data and the model settings"
        n = summary["candidates_skipped"] + summary["candidates_non_finite"] + summary["candidates_scored"]
        raise KssError(f"no candidate could be scored ({summary['candidates_skipped']} over budget, "
                       f"{summary['candidates_non_finite']} with a singular kernel, of {n}); {fix}")
    log.info("best: candidate %d, R=%.4f, %d params  %s", summary["best_index"], summary["best_score"],
             summary["params"], Genotype.from_json(summary["best_genotype"]))


def known_winner_cost(setup: SearchSetup, data, out_dir: Path, records: list[dict], batches: list, device) -> dict | None:
    """The winner's cost, measured once: a finished search reports the one its search.json holds."""
    best = max((r for r in records if r["status"] == "scored"), key=lambda r: r["score"], default=None)
    if best is None:
        return None
    try:
        before = json.loads((out_dir / SUMMARY).read_text())
    except (OSError, json.JSONDecodeError):
        before = {}
    if before.get("best_index") == best["index"] and before.get("cost_table") == cost_table_record(setup.cost):
        return {k: before[k] for k in COST_KEYS if k in before}
    batch = batches[0] if batches else data.search_batches(setup.batch_size, 1, setup.seed)[0]
    return winner_cost(setup, best, batch, device)


def score_candidates(setup: SearchSetup, batches: list, device, progress: bool, records: list, candidates_path: Path,
                      indices: range | None = None, label: str = "") -> None:
    """Score the candidates `indices` (all of them: range(iters)) from the len(records)-th on, appending each
    line to `candidates_path` as it is done; `label` names a shard in the progress bar and messages."""
    indices = range(setup.iters) if indices is None else indices
    check_precision(setup.precision, device)  # before anything is written: tf32 on a CPU leaves no run dir
    record_settings(candidates_path.parent, setup)  # only once the data is there: bad input writes nothing
    best = max((r["score"] for r in records if r["status"] == "scored"), default=None)
    bar = tqdm(
        total=len(indices), initial=len(records), disable=not progress, unit="cand",
        desc=f"search {setting_tag(setup.kernels, setup.iters)}{' ' + label if label else ''}", dynamic_ncols=True,
    )
    first = len(records)
    fast = use_fused(setup, device)
    with bar, open(candidates_path, "a") as sink, interruptible(records, len(indices), label), \
            scoring_allocator(setup, device):
        for position in range(len(records), len(indices)):
            index = indices[position]
            record = evaluate_candidate(setup, index, batches, device, fast)
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
            records.append(record)
            # the first candidate of a fused search also compiles the blocks: time the second instead
            if position == first + fast and len(indices) - position > 1:
                compiled = records[first]["seconds"] if fast else None
                say_how_long(bar, record["seconds"], len(indices) - position - 1, device, compiled)
            if record["status"] == "non_finite":
                bar.write(f"candidate {index}: non-finite score {record['raw_score']} (kept, never picked)")
            elif record["status"] == "scored" and (best is None or record["score"] > best):
                best = record["score"]
            bar.set_postfix(best=f"{best:.3f}" if best is not None else "-", refresh=False)
            bar.update()


