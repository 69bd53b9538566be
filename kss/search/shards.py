"""Sharded search: `shards=N shard=K` scores the candidates i with i mod N == K into the run
directory of the unsharded search, so N processes (or GPUs, or SLURM array tasks) split one search.

- Each shard appends to its own file, candidates.shard-K-of-N.jsonl, under its own lock, so shards
  run side by side or one after another, and each resumes on its own (rerun its command).
- Each finished shard writes search.shard-K-of-N.json (its own best, device and host), then, holding
  the directory's lock for a moment, merges if every shard is complete: candidates.jsonl (index
  order) and search.json, the unsharded search's files (timing and host aside). The shard that
  completes the set therefore merges, and logs the search to W&B, once.
- `shards=N` with no `shard` scores nothing: it merges what is complete, or names each missing or
  incomplete shard with the command that finishes it.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path

import torch

from kss.errors import KssError
from kss.runlock import is_held, run_lock
from kss.io import write_json, write_lines
from kss.search.loop import known_winner_cost, report_best, scorer, summarize
from kss.search.records import CANDIDATES, SETTLE_SECONDS, SUMMARY, check_settings, is_finished, read_candidates
from kss.search.setup import SearchSetup

log = logging.getLogger(__name__)


def shard_name(shard: int, shards: int) -> str:
    return f"shard-{shard}-of-{shards}"


def shard_lock(shard: int, shards: int) -> str:
    return f".kss.{shard_name(shard, shards)}.lock"


def shard_candidates(out_dir: Path, shard: int, shards: int) -> Path:
    return out_dir / f"candidates.{shard_name(shard, shards)}.jsonl"


def shard_summary(out_dir: Path, shard: int, shards: int) -> Path:
    return out_dir / f"search.{shard_name(shard, shards)}.json"


def shard_indices(iters: int, shard: int, shards: int) -> range:
    return range(shard, iters, shards)


def read_shard(out_dir: Path, setup: SearchSetup, shard: int, repair: bool) -> list[dict]:
    """The shard's finished candidates; `repair` only by the shard's own process (it holds the shard)."""
    path = shard_candidates(out_dir, shard, setup.shards)
    done = read_candidates(path, start=shard, step=setup.shards, repair=repair)
    return done[: len(shard_indices(setup.iters, shard, setup.shards))]


def run_sharded(setup: SearchSetup, data, out_dir: Path, device, shard: int | None, progress: bool = True,
                lock_wait: bool = False) -> tuple[dict, bool]:
    """Score one shard (or, with shard None, merge and report); (summary, whether it merged the set just now)."""
    out_dir = Path(out_dir)
    if shard is None:
        check_settings(out_dir, setup)
        merged, merged_now, missing = merge(setup, data, out_dir, device)
        if merged is None:
            raise KssError(f"the sharded search in {out_dir} is not complete: {missing}")
        report_best(merged)
        return merged, merged_now
    summary = score_shard(setup, data, out_dir, device, shard, progress, lock_wait)
    merged, merged_now, missing = merge(setup, data, out_dir, device)
    if merged is None:
        log.info("%s is done; waiting for %s", shard_name(shard, setup.shards), missing)
        return summary, False
    report_best(merged)
    return merged, merged_now


def score_shard(setup: SearchSetup, data, out_dir: Path, device, shard: int, progress: bool, lock_wait: bool) -> dict:
    """Score (or resume, or just report) one shard; returns its own summary (search.shard-K-of-N.json)."""
    name = shard_name(shard, setup.shards)
    with run_lock(out_dir, lock_wait, name=shard_lock(shard, setup.shards)):
        check_settings(out_dir, setup)
        indices = shard_indices(setup.iters, shard, setup.shards)
        records = read_shard(out_dir, setup, shard, repair=True)
        if len(records) == len(indices):
            log.info("%s %s: already finished (%d of %d candidates)", out_dir, name, len(records), len(indices))
        else:
            if records:
                log.info("resuming %s %s: %d of %d candidates already done", out_dir, name, len(records), len(indices))
            # as in search(): the caller's random state must not depend on whether there was work left
            batches = [b.to(device) for b in data.search_batches(setup.batch_size, setup.repeats, setup.seed)]
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                scorer(setup)(setup, batches, device, progress, records,
                                  shard_candidates(out_dir, shard, setup.shards), indices, name)
        summary = summarize(setup, records, device) | {"shard": shard, "shards": setup.shards}
        write_json(shard_summary(out_dir, shard, setup.shards), summary)
    return summary


def merge(setup: SearchSetup, data, out_dir: Path, device) -> tuple[dict | None, bool, str]:
    """Merge complete shards into candidates.jsonl and search.json, holding the directory for a moment.
    Returns (merged summary or None, whether this call completed the set, what is missing)."""
    with run_lock(out_dir, wait=SETTLE_SECONDS):
        parts = [read_shard(out_dir, setup, k, repair=False) for k in range(setup.shards)]
        missing = [(k, len(part)) for k, part in enumerate(parts)
                   if len(part) < len(shard_indices(setup.iters, k, setup.shards))]
        if missing:
            return None, False, describe_missing(setup, out_dir, missing)
        merged_before = is_finished(out_dir, setup.iters)
        records = sorted((r for part in parts for r in part), key=lambda r: r["index"])
        write_lines(out_dir / CANDIDATES, records)
        cost = known_winner_cost(setup, data, out_dir, records, [], device)  # as the unsharded search.json has it
        summary = summarize(setup, records, device, cost) | scored_where(setup, out_dir)
        write_json(out_dir / SUMMARY, summary)
    log.info("merged %d shards into %s", setup.shards, out_dir / SUMMARY)
    return summary, not merged_before, ""


def scored_where(setup: SearchSetup, out_dir: Path) -> dict:
    """The device and host the shards scored on (one value when they agree), not the merging process's."""
    found = [json.loads(p.read_text()) for k in range(setup.shards)
             if (p := shard_summary(out_dir, k, setup.shards)).exists()]
    return {key: ", ".join(dict.fromkeys(s[key] for s in found)) for key in ("device", "host") if found}


def describe_missing(setup: SearchSetup, out_dir: Path, missing: list[tuple[int, int]]) -> str:
    """One line: each missing or incomplete shard by name, how far it got, and the command that finishes it."""
    parts = []
    for shard, done in missing:
        total = len(shard_indices(setup.iters, shard, setup.shards))
        state = f"not started, {total} candidates" if done == 0 else f"{done} of {total} candidates done"
        if is_held(out_dir, shard_lock(shard, setup.shards)):
            state = f"running, {done} of {total} candidates done"
        parts.append(f"{shard_name(shard, setup.shards)} ({state}): {finish_command(out_dir, shard)}")
    return "; ".join(parts)


def finish_command(out_dir: Path, shard: int) -> str:
    """This run's command with shard=K and its run directory (works from a multirun job too)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        passed = [o for o in HydraConfig.get().overrides.task if o.split("=")[0].lstrip("+~") != "shard"]
        settings = " ".join(shlex.quote(o) for o in passed)
    else:  # called from Python, not from search.py
        settings = "<the same settings>"
    where = str(out_dir) if re.fullmatch(r"[\w/.:+-]+", str(out_dir)) else f'"{out_dir}"'  # a multirun's a=b,c/
    return f"python search.py {settings} shard={shard} {shlex.quote('hydra.run.dir=' + where)}"
