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

import contextlib
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from kss import config as C
from kss.space.cost import COST_KEYS, CostTable, candidate_figures, cost_table_record, measure_cost
from kss.errors import Interrupted, KssError
from kss.space.genotype import Genotype, sample_genotype
from kss.space.network import ModelSpec, scoring_network
from kss.space.neurons import NeuronSpec
from kss.space.params import check_budget_reachable, count_params, memory_bytes
from kss.runlock import run_lock
from kss.search.score import KERNELS, SCORE_VERSION, check_precision, memory_format, score_network

log = logging.getLogger(__name__)

CANDIDATES = "candidates.jsonl"
SUMMARY = "search.json"
SETTINGS = "search_settings.json"
SETTLE_SECONDS = 120  # how long to wait for the directory's lock where it is only held a moment (settings, merge)


@dataclass
class SearchSetup:
    """Everything a search depends on, validated."""

    kernel_set: str
    kernels: list[int]
    iters: int
    seed: int
    dataset: str
    spec: ModelSpec
    neuron: NeuronSpec
    score: str = "hamming"
    batch_size: int = 256
    repeats: int = 2
    carry_state: bool = True  # score.carry_state: repeats carry neuron state and dropout masks (SNASNet's final code)
    max_params: float | None = None
    data_split: dict | None = None  # dataset settings that decide which images are scored (val_size, ...)
    precision: str = "fp32"  # score.precision: fp32 (the reference's bits) | tf32 | bf16
    layout: str = "auto"  # score.layout: auto (NCHW; channels-last for bf16) | nchw | channels_last
    cudnn_benchmark: bool = False  # score.cudnn_benchmark: cuDNN's autotuner (CUDA)
    fused: bool | str = "auto"  # score.fused: compiled LIF/pool blocks; the same bits, so not a setting
    allocator: str = "keep_freed"  # score.allocator: glibc keeps freed memory while scoring; same bits, not a setting
    shards: int = 1  # how many processes split the candidates (kss.search.shards); 1: one process scores them all
    max_energy_uj: float | None = None  # filtered after scoring: the cost needs a forward pass
    max_sops: float | None = None
    cost_every: bool = False  # cost every scored candidate (always, when an energy or SOP budget is set)
    cost: CostTable = field(default_factory=CostTable)
    strategy: str = "random"  # search.strategy: random (SNASNet's sampler) | tpe | evolution | pareto (kss.search.guided)
    storage: str | None = None  # search.storage (guided): None = sqlite in the run dir; any SQLAlchemy URL; memory
    population: int = 20  # search.population: evolution's population size
    minimise: str | None = "params"  # search.minimise: pareto's second objective (params | energy_uj | sops)

    FUSED_FROM = 100  # candidates: below this, compiling (~10 s per layer shape on a CPU) does not pay off

    def __post_init__(self):
        if not isinstance(self.iters, int) or self.iters <= 0:
            raise KssError(f"iters must be a positive integer (got {self.iters}); e.g. iters=1000")
        if self.score not in KERNELS:
            raise KssError(f"unknown score kind {self.score!r}; use one of {', '.join(KERNELS)}")
        if self.repeats < 1:
            raise KssError(f"score.repeats must be >= 1 (got {self.repeats})")
        check_precision(self.precision, layout=self.layout)
        if not isinstance(self.carry_state, bool):
            raise KssError(f"score.carry_state must be true or false (got {self.carry_state!r})")
        if not isinstance(self.cudnn_benchmark, bool):
            raise KssError(f"score.cudnn_benchmark must be true or false (got {self.cudnn_benchmark!r})")
        if self.fused not in ("auto", True, False):
            raise KssError(f"score.fused must be auto, true or false (got {self.fused!r})")
        if self.allocator not in ALLOCATORS:
            raise KssError(f"score.allocator must be {' or '.join(ALLOCATORS)} (got {self.allocator!r})")
        for name in C.BUDGETS:
            C.check_budget(getattr(self, name), name)
        self.spec.validate(self.kernels)
        check_budget_reachable(self.max_params, self.spec, self.neuron)
        from kss.search.guided import check_strategy

        check_strategy(self)

    def settings(self) -> dict:
        """What the results depend on (iters is not: a longer search extends a shorter one)."""
        data = asdict(self)
        data.pop("iters")
        data.pop("fused")  # bit-identical either way (tests/test_equivalence.py)
        data.pop("allocator")  # where memory comes from, not what is computed (tests/test_search.py)
        data["layout"] = self.effective_layout()  # auto is NCHW (scoring_network's) unless bf16
        data["score_version"] = SCORE_VERSION
        # Cost settings change the result only through a budget; left out at their defaults, so
        # searches from before they existed still resume.
        if not self.cost_budgets():
            data.pop("cost")
        for name, default in LATER_SETTINGS.items():
            if name != "shards" and data[name] == default:
                data.pop(name)
        data.pop("storage")  # where the study lives, not what it finds
        if self.strategy != "evolution":
            data.pop("population")
        if self.strategy != "pareto":
            data.pop("minimise")
        return json.loads(json.dumps(data))

    def effective_layout(self) -> str:
        return "channels_last" if memory_format(self.precision, self.layout) == torch.channels_last else "nchw"

    def cost_budgets(self) -> dict:
        """The budgets that need a candidate's cost (a forward pass), when set."""
        return {name: value for name in ("max_energy_uj", "max_sops") if (value := getattr(self, name)) is not None}

    def exceeded(self, cost: dict) -> str | None:
        """The first cost budget `cost` exceeds, or None."""
        key = {"max_energy_uj": "energy_uj", "max_sops": "sops"}
        return next((name for name, limit in self.cost_budgets().items() if cost[key[name]] > limit), None)


def setup_from_config(cfg: DictConfig, data, shards: int = 1) -> SearchSetup:
    name, kernels = C.kernel_set(cfg)
    search = cfg.get("search") or {}
    return SearchSetup(
        kernel_set=name,
        kernels=kernels,
        iters=cfg.iters,
        seed=cfg.seed,
        dataset=cfg.dataset.name,
        spec=C.model_spec(cfg, data),
        neuron=C.neuron_spec(cfg),
        score=cfg.score.kind,
        batch_size=cfg.score.batch_size,
        repeats=cfg.score.repeats,
        carry_state=cfg.score.get("carry_state", True),
        max_params=cfg.budget.max_params,
        data_split=C.data_split(cfg),
        precision=cfg.score.get("precision", "fp32"),
        layout=cfg.score.get("layout", "auto"),
        cudnn_benchmark=cfg.score.get("cudnn_benchmark", False),
        fused=cfg.score.get("fused", "auto"),
        allocator=cfg.score.get("allocator", "keep_freed"),
        shards=shards,
        max_energy_uj=cfg.budget.get("max_energy_uj"),
        max_sops=cfg.budget.get("max_sops"),
        cost_every=bool(cfg.get("cost", {}).get("every_candidate", False)),
        cost=C.cost_table(cfg),
        strategy=search.get("strategy", "random"),
        storage=search.get("storage"),
        population=search.get("population", 20),
        minimise=search.get("minimise", "params"),
    )


ALLOCATORS = ("keep_freed", "default")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_GLIBC_MMAP_MAX, _GLIBC_TRIM_THRESHOLD = 65536, 128 * 1024  # glibc's defaults, put back after scoring


def _glibc():
    """glibc's malloc controls, or None (another C library, another OS)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def uses_allocator(setup: SearchSetup, device: torch.device) -> str:
    """The allocator a search on `device` scores with: keep_freed only on a CPU with glibc."""
    return "keep_freed" if setup.allocator == "keep_freed" and device.type == "cpu" and _glibc() else "default"


@contextlib.contextmanager
def scoring_allocator(setup: SearchSetup, device: torch.device):
    """score.allocator=keep_freed (the default; Linux CPUs): while candidates are scored, glibc keeps freed
    memory in the process (no mmap for large blocks, no trimming) instead of handing every block over
    32 MB back to the kernel, which then faults in and zeroes each layer's output again. Measured at
    CIFAR-100 widths: 1.24x-1.39x per candidate for ~18% more peak memory (README, Speed); the same bits.
    Afterwards glibc's defaults are back and the kept memory is returned. score.allocator=default: untouched."""
    libc = _glibc() if uses_allocator(setup, device) == "keep_freed" else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, -1)  # -1: never trim
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def use_fused(setup: SearchSetup, device: torch.device) -> bool:
    """score.fused=auto: on a CPU, for searches long enough to pay for compiling."""
    if setup.fused == "auto":
        return device.type == "cpu" and setup.iters >= setup.FUSED_FROM
    return bool(setup.fused) and device.type == "cpu"


def candidate_rngs(seed: int, index: int) -> tuple[np.random.Generator, int]:
    """Independent streams for candidate `index`: one to sample the genotype, one seed for torch init."""
    sample_seq, init_seq = np.random.SeedSequence([seed, index]).spawn(2)
    return np.random.default_rng(sample_seq), int(init_seq.generate_state(1, np.uint64)[0] % 2**63)


def evaluate_candidate(setup: SearchSetup, index: int, batches: list[torch.Tensor], device, fused_blocks: bool = False,
                       genotype: Genotype | None = None) -> dict:
    """One line of candidates.jsonl: candidate `index` drawn by SNASNet's sampler, or `genotype` (a guided
    strategy's choice), initialised from (seed, index) either way.

    The random search skips a candidate over budget.max_params before it is built; a guided one scores it
    (its sampler learns from it) and records it over budget. A candidate over an energy or SOP budget is
    filtered after scoring (its cost needs a forward pass) and keeps its score.
    """
    start = time.perf_counter()
    rng, init_seed = candidate_rngs(setup.seed, index)
    if genotype is None:
        genotype = sample_genotype(rng, setup.kernels, setup.spec.cell_type)
    params = count_params(genotype, setup.spec, setup.neuron)
    record = {"index": index, "genotype": genotype.to_json(), "params": params}
    over_params = setup.max_params is not None and params > setup.max_params
    if over_params and setup.strategy == "random":
        return record | {"status": "over_budget", "score": None, "raw_score": None, **candidate_figures(None),
                         "exceeds": "max_params", "seconds": time.perf_counter() - start}
    net = candidate_network(setup, genotype, init_seed, device)
    score = score_network(net, batches, setup.score, fused_blocks, setup.precision, setup.layout, setup.cudnn_benchmark,
                          setup.carry_state)
    status = "scored" if math.isfinite(score) else "non_finite"
    cost, exceeds = None, None
    if status == "scored" and (setup.cost_every or setup.cost_budgets()):
        cost = measure_cost(net, batches[0], setup.cost, batch_statistics=True)
        exceeds = setup.exceeded(cost)
    if status == "scored" and over_params:
        exceeds = "max_params"
    return record | {
        "status": "over_budget" if exceeds else status,
        "score": score if status == "scored" else None,
        "raw_score": None if status == "scored" else repr(score),
        **candidate_figures(cost),
        "exceeds": exceeds,
        "seconds": time.perf_counter() - start,
    }


def candidate_network(setup: SearchSetup, genotype: Genotype, init_seed: int, device):
    """Candidate i's network, initialised from its own seed (so it can be rebuilt exactly)."""
    torch.manual_seed(init_seed)
    return scoring_network(genotype, setup.spec, setup.neuron).to(device)


def winner_cost(setup: SearchSetup, best: dict, batch: torch.Tensor, device) -> dict:
    """The best candidate's cost per image at initialisation, on the first scoring batch, with BN
    on batch statistics as the score sees it (training changes the firing rates: metrics.json
    has the trained network's cost on the test set)."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        net = candidate_network(setup, Genotype.from_json(best["genotype"]), candidate_rngs(setup.seed, best["index"])[1], device)
        return measure_cost(net, batch.to(device), setup.cost, batch_statistics=True)


def read_candidates(path: Path, start: int = 0, step: int = 1, repair: bool = True) -> list[dict]:
    """Finished candidates (indices start, start+step, ...); a half-written last line (an interrupted
    write) is cut off the file, or only skipped without `repair` (a file another process may be writing)."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    keep = raw[: raw.rfind(b"\n") + 1]  # everything up to the last complete line
    records = []
    for number, line in enumerate(keep.decode("utf-8", errors="replace").splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise KssError(f"{path} line {number} is corrupt; move the file away to start this search afresh") from None
        expected = start + step * len(records)
        if record.get("index") != expected:
            raise KssError(f"{path} line {number} holds candidate {record.get('index')}, expected {expected}")
        records.append(record)
    if len(keep) != len(raw) and repair:
        log.warning("dropping a half-written last line of %s (interrupted write)", path)
        with open(path, "r+b") as f:
            f.truncate(len(keep))
    return records


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# Settings added after searches had been run: a stored search without one ran at its default
# (and one that stored the default resumes as well).
LATER_SETTINGS = {"shards": 1, "max_energy_uj": None, "max_sops": None, "cost_every": False, "precision": "fp32",
                  "layout": "nchw", "cudnn_benchmark": False, "carry_state": False, "score_version": 1,
                  "strategy": "random"}


def check_settings(out_dir: Path, setup: SearchSetup) -> None:
    path = out_dir / SETTINGS
    if path.exists():
        before = LATER_SETTINGS | json.loads(path.read_text())
        now = LATER_SETTINGS | setup.settings()
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        if before["score_version"] != now["score_version"]:
            raise KssError(
                f"{out_dir} was scored with kss's score version {before['score_version']} (SNASNet's first upload: "
                f"R on another scale) and this kss scores with version {now['score_version']} (its final code); "
                "its R cannot be mixed: pass hydra.run.dir=<new dir>, or move the old one away"
            )
        if changed:
            how = f" (it was run with shards={before['shards']})" if "shards" in changed else ""
            raise KssError(
                f"{out_dir} holds a search with other settings ({', '.join(changed)} differ{how}); "
                "rerun with the same settings to resume, or pass hydra.run.dir=<new dir>"
            )


def record_settings(out_dir: Path, setup: SearchSetup) -> None:
    """Check the settings again and write them if they are new, holding the directory for a moment
    (the shards of one search may start together; a lone search holds it already)."""
    with run_lock(out_dir, wait=SETTLE_SECONDS):
        check_settings(out_dir, setup)
        if not (out_dir / SETTINGS).exists():
            write_json(out_dir / SETTINGS, setup.settings())


def summarize(setup: SearchSetup, records: list[dict], device, cost: dict | None = None) -> dict:
    scored = [r for r in records if r["status"] == "scored"]
    best = max(scored, key=lambda r: r["score"], default=None)  # ties: the earliest candidate
    seconds = sum(r["seconds"] for r in records)
    summary = {
        "kernel_set": setup.kernel_set,
        "kernels": setup.kernels,
        "setting": C.setting_tag(setup.kernels, setup.iters),
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
                                             for r in records) for name in C.BUDGETS},
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
        from kss.search.guided import summary_fields

        summary |= summary_fields(setup, records)
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
    summary = summarize(setup, records, device, _winner_cost(setup, data, out_dir, records, batches, device))
    write_json(out_dir / SUMMARY, summary)
    report_best(summary)
    return summary


def scorer(setup: SearchSetup):
    """What scores the remaining candidates: _score_candidates (random) or kss.search.guided's trial loop."""
    if setup.strategy == "random":
        return _score_candidates
    from kss.search.guided import score_trials

    return score_trials


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


def _winner_cost(setup: SearchSetup, data, out_dir: Path, records: list[dict], batches: list, device) -> dict | None:
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


def _score_candidates(setup: SearchSetup, batches: list, device, progress: bool, records: list, candidates_path: Path,
                      indices: range | None = None, label: str = "") -> None:
    """Score the candidates `indices` (all of them: range(iters)) from the len(records)-th on, appending each
    line to `candidates_path` as it is done; `label` names a shard in the progress bar and messages."""
    indices = range(setup.iters) if indices is None else indices
    check_precision(setup.precision, device)  # before anything is written: tf32 on a CPU leaves no run dir
    record_settings(candidates_path.parent, setup)  # only once the data is there: bad input writes nothing
    best = max((r["score"] for r in records if r["status"] == "scored"), default=None)
    bar = tqdm(
        total=len(indices), initial=len(records), disable=not progress, unit="cand",
        desc=f"search {C.setting_tag(setup.kernels, setup.iters)}{' ' + label if label else ''}", dynamic_ncols=True,
    )
    first = len(records)
    fast = use_fused(setup, device)
    with bar, open(candidates_path, "a") as sink, _interruptible(records, len(indices), label), \
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
                _say_how_long(bar, record["seconds"], len(indices) - position - 1, device, compiled)
            if record["status"] == "non_finite":
                bar.write(f"candidate {index}: non-finite score {record['raw_score']} (kept, never picked)")
            elif record["status"] == "scored" and (best is None or record["score"] > best):
                best = record["score"]
            bar.set_postfix(best=f"{best:.3f}" if best is not None else "-", refresh=False)
            bar.update()


def _say_how_long(bar, seconds: float, remaining: int, device, compiled: float | None = None) -> None:
    """One line after the first timed candidate: what the whole search will take on this machine."""
    total = seconds * remaining
    hours = total / 3600
    if compiled is None:
        line = f"first candidate took {seconds:.1f} s on {device}: the remaining {remaining} take about "
    else:
        line = (f"a candidate takes {seconds:.1f} s on {device} (the first took {compiled:.1f} s, compiling "
                f"score.fused's blocks): the remaining {remaining} take about ")
    line += f"{hours:.1f} h" if hours >= 1 else f"{total / 60:.0f} min" if total >= 60 else f"{total:.0f} s"
    if device.type == "cpu" and hours >= 1:
        line += ("; a CPU-sized real-data search instead: "
                 "python search.py dataset=fashion_mnist model=cpu iters=50 score.batch_size=128")
    bar.write(line)


@contextlib.contextmanager
def _interruptible(records: list, total: int, label: str = ""):
    """Ctrl-C ends the search in one line; every finished candidate is already on disk."""
    try:
        yield
    except KeyboardInterrupt:
        what = f"{label} " if label else ""
        raise Interrupted(f"{what}interrupted after {len(records)} of {total} candidates; "
                          "rerun the same command to resume") from None


def is_finished(out_dir: Path, iters: int) -> bool:
    return (out_dir / SUMMARY).exists() and len(read_candidates(out_dir / CANDIDATES)) >= iters


def check_batch_fits(setup: SearchSetup, data) -> None:
    """The scoring batch must fit the training split; loads the data, so missing data is refused here too."""
    data.setup()
    n = len(data.train_set)
    if setup.batch_size > n:
        raise KssError(f"score.batch_size={setup.batch_size} is larger than the {setup.dataset} training split "
                       f"({n} images); pass score.batch_size={n} or less")


def run_search(cfg: DictConfig, out_dir: str | Path | None = None) -> dict:
    """The task behind `search.py`: config in, search.json's content out (a shard's own summary
    while other shards of its search are still to run)."""
    from kss.search import shards as S
    from kss.cli import checked

    shards, shard = S.check_sharding(cfg)  # before any work: a refused command leaves nothing behind
    out_dir = Path(out_dir or C.run_dir())
    data = C.data_module(cfg)
    setup = setup_from_config(cfg, data, shards)
    device = C.resolve_device(cfg.device)
    check_precision(setup.precision, device)
    if shards == 1 and not is_finished(out_dir, setup.iters) or shards > 1 and shard is not None:
        check_batch_fits(setup, data)
    checked()  # the input is valid: the config tree (extras.print_config), then the work
    if shards > 1:
        summary, merged_now = S.run_sharded(setup, data, out_dir, device, shard, progress=cfg.get("progress", True),
                                            lock_wait=cfg.get("lock_wait", False))
        if merged_now:  # the shard that completes the set logs the search, once
            log_to_wandb(cfg, out_dir, summary)
        return summary
    finished = is_finished(out_dir, setup.iters)
    summary = search(setup, data, out_dir, device, progress=cfg.get("progress", True), lock_wait=cfg.get("lock_wait", False))
    if not finished:  # a finished search was logged when it finished: no second W&B run
        log_to_wandb(cfg, out_dir, summary)
    return summary


def log_to_wandb(cfg: DictConfig, out_dir: Path, summary: dict) -> None:
    """One W&B run per search (job_type 'search'), offline by default; the scores as a curve."""
    if cfg.wandb.mode == "disabled":
        return
    import wandb

    config = C.logged_config(cfg)
    config.pop("shard", None)  # a sharded search is logged once, by whichever shard completed it
    run = wandb.init(project=cfg.wandb.project, group=cfg.wandb.group, job_type="search", dir=str(out_dir),
                     name=out_dir.name, mode=cfg.wandb.mode, tags=C.run_tags(cfg), config=config,
                     settings=wandb.Settings(quiet=True))
    try:
        best = None
        for record in read_candidates(out_dir / CANDIDATES)[: cfg.iters]:
            if record["status"] == "scored":
                best = record["score"] if best is None else max(best, record["score"])
            costed = {f"candidate/{k}": record[k] for k in ("energy_uj", "sops") if record.get(k) is not None}
            run.log({"candidate/score": record["score"], "candidate/params": record["params"], "best_score": best,
                     **costed}, step=record["index"])
        run.summary.update({k: v for k, v in summary.items() if not isinstance(v, (dict, list))})
        run.summary.update({f"firing_rate/{k}": v for k, v in summary.get("firing_rates", {}).items()})
    finally:
        run.finish()
