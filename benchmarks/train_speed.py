"""Training images/s on the Fashion-MNIST CPU preset, every combination in one run:
trainer.deterministic x model.batch_norm x model.compile x channels-last.

--mode interleaved (default): the network, AdamW and three real batches as `train.py experiment=fmnist_cpu`
builds them, every row's training step in turn, round after round (shuffled), in one process, so that a
shared machine's changing load falls on all rows alike; images/s from each row's median step.
--mode lightning: each row a real `train.py experiment=fmnist_cpu` training (kss.tasks.train.run_train:
Lightning, the data loader) cut to a few batches, one after the other; images/s counts the batches after
the warm-up ones. "first steps" is the warm-up steps' time (allocation; a compiled network compiles there).
batch_norm per_step is the native per-step path (one output, one input gradient); per_step_tcalls is the
same statistics from T BatchNorm2d calls (kss before issue 21; SeqBatchNorm2d.native_steps=False); joint
normalises over T x B. Rows run most telling first; those not started within --budget seconds are
reported as not measured.

python benchmarks/train_speed.py [--rounds 5] [--no-compile | --compile-nchw] [--out docs/results/train_speed_cpu.md]
python benchmarks/train_speed.py --mode lightning [--batches 4] [--rounds 1] [--budget 540]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
import kss.train.module
from kss.space.network import SeqBatchNorm2d, build_network
from kss.tasks.train import run_train

# the cell `python train.py experiment=fmnist_cpu` searches and trains (docs/results/fmnist_cpu_train_metrics.json)
GENOTYPE = {"cell_type": "forward", "edges": {"0->1": "conv3", "0->2": "avgpool3", "1->2": "conv1", "0->3": "conv1",
                                              "1->3": "zero", "2->3": "conv1"}}
STEPS: list[tuple[float, int]] = []  # (seconds, images) of every training batch of the current run


class StepTimer(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        STEPS.append((time.perf_counter() - self._start, len(batch[1])))


def measure(row: dict, genotype_file: Path, out: Path, batches: int, warmup: int) -> tuple[float, float]:
    """(images/s after the warm-up batches, seconds of the warm-up batches) of one short training."""
    from hydra import compose, initialize_config_dir

    overrides = ["experiment=fmnist_cpu", f"genotype={genotype_file}", "trainer.max_epochs=1",
                 f"trainer.limit_train_batches={warmup + batches}", "dataset.val_size=0", "test=false",
                 "wandb.mode=disabled", "progress=false", "extras=none", "callbacks=none",
                 f"trainer.deterministic={str(row['deterministic']).lower()}",
                 f"model.batch_norm={'joint' if row['batch_norm'] == 'joint' else 'per_step'}",
                 f"model.compile={str(row['compile']).lower()}", "+callbacks.step_timer._target_=__main__.StepTimer"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    SeqBatchNorm2d.native_steps = row["batch_norm"] != "per_step_tcalls"
    kss.train.module.build_network = functools.partial(build_network, channels_last=row["layout"] == "channels_last")
    STEPS.clear()
    try:
        run_train(cfg, out)
    finally:
        SeqBatchNorm2d.native_steps, kss.train.module.build_network = True, build_network
    timed = STEPS[warmup:]
    return sum(n for _, n in timed) / sum(s for s, _ in timed), sum(s for s, _ in STEPS[:warmup])


def interleaved(args) -> tuple[list[dict], dict, str]:
    """Every row's training step in turn, round after round, in one process: a shared machine's load
    falls on all rows alike. The network, AdamW and real batches as `train.py experiment=fmnist_cpu`
    builds them (no Lightning loop); each row's median step time over the rounds."""
    import random
    import statistics

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from kss import config as C
    from kss.space.genotype import Genotype

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=fmnist_cpu", "dataset.num_workers=0"])
    data = C.data_module(cfg)
    data.setup("fit")
    loader = iter(data.train_dataloader())
    batches = [next(loader) for _ in range(3)]
    genotype, neuron = Genotype.from_json(GENOTYPE), C.neuron_spec(cfg)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    layouts = ("channels_last", "nchw") if args.compile_nchw else ("channels_last",)
    rows = [row(d, b, False, l) for l in ("channels_last", "nchw") for b in ("per_step_tcalls", "per_step", "joint")
            for d in (True, False)]
    if not args.no_compile:
        rows += [row(d, b, True, l) for l in layouts for b in ("per_step", "joint") for d in (True, False)]
    nets, first = {}, {}
    for spec in rows:
        key = (spec["batch_norm"], spec["compile"], spec["layout"])
        if key not in nets:
            torch.manual_seed(0)
            model_spec = C.model_spec(cfg, data)
            model_spec.batch_norm = "joint" if spec["batch_norm"] == "joint" else "per_step"
            net = build_network(genotype, model_spec, neuron, channels_last=spec["layout"] == "channels_last").train()
            if spec["compile"]:
                net.compile()
            nets[key] = (net, instantiate(optimizer)(params=net.parameters()))
    def step(spec, batch) -> float:
        net, opt = nets[(spec["batch_norm"], spec["compile"], spec["layout"])]
        torch.use_deterministic_algorithms(spec["deterministic"])
        SeqBatchNorm2d.native_steps = spec["batch_norm"] != "per_step_tcalls"
        images, labels = batch
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        opt.step()
        return time.perf_counter() - start
    start = time.perf_counter()
    for i, spec in enumerate(rows):  # warm-up: allocation, kernel choice, compiling (a new graph per mode)
        first[i] = step(spec, batches[0]) + step(spec, batches[1])
        print(f"warm-up {spec}: {first[i]:.1f} s", flush=True)
    times = {i: [] for i in range(len(rows))}
    order = list(range(len(rows)))
    rng = random.Random(0)
    for round_ in range(args.rounds):
        rng.shuffle(order)
        for i in order:
            times[i].append(step(rows[i], batches[(round_ + i) % len(batches)]))
        print(f"round {round_ + 1}/{args.rounds} done, {time.perf_counter() - start:.0f} s", flush=True)
    torch.use_deterministic_algorithms(False)
    SeqBatchNorm2d.native_steps = True
    results = {i: (len(batches[0][1]) / statistics.median(times[i]), first[i]) for i in times}
    how = (f"interleaved: {args.rounds} rounds, rows in shuffled order each round, median step; "
           f"first steps = the 2 warm-up steps (compiling included)")
    return rows, results, how


def row(deterministic, batch_norm, compile_, layout) -> dict:
    return dict(deterministic=deterministic, batch_norm=batch_norm, compile=compile_, layout=layout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4, help="timed batches per row (after the warm-up)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved: rounds (median kept); lightning: "
                        "rounds over the eager rows (best kept)")
    parser.add_argument("--budget", type=float, default=540, help="seconds; rows not started by then are skipped")
    parser.add_argument("--mode", default="interleaved", choices=["interleaved", "lightning"],
                        help="interleaved: every row's step in turn, in one process; lightning: one short "
                             "train.py run per row, one after the other")
    parser.add_argument("--no-compile", action="store_true", help="interleaved: eager rows only")
    parser.add_argument("--compile-nchw", action="store_true", help="interleaved: compiled NCHW rows too")
    parser.add_argument("--out", type=Path, default=None, help="write the table (markdown) here too")
    args = parser.parse_args()
    logging.getLogger("kss").setLevel(logging.WARNING)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    start = time.perf_counter()

    header = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128, "
              f"genotype {json.dumps(GENOTYPE['edges'])}")
    if args.mode == "interleaved":
        print(header, flush=True)
        rows, results, how = interleaved(args)
        return report(args, rows, results, f"{header}; {how}", start)
    # the most telling first (a shared machine may spend the budget before the last ones)
    rows = [row(d, b, False, "channels_last") for b in ("per_step_tcalls", "per_step", "joint") for d in (True, False)]
    rows += [row(False, b, True, "channels_last") for b in ("per_step", "joint")]
    rows += [row(d, b, False, "nchw") for b in ("per_step_tcalls", "per_step", "joint") for d in (True, False)]
    rows += [row(True, b, True, "channels_last") for b in ("per_step", "joint")]
    rows += [row(d, b, True, "nchw") for d in (False, True) for b in ("per_step", "joint")]
    results: dict[int, tuple[float, float]] = {}
    header += f"; lightning: one run per row, {args.batches} timed batches after the warm-up"
    print(header, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        genotype_file = Path(tmp) / "genotype.json"
        genotype_file.write_text(json.dumps(GENOTYPE))
        runs = 0
        for round_ in range(args.rounds):  # later rounds: eager rows again, the best kept
            for i, spec in enumerate(rows):
                if round_ and spec["compile"]:
                    continue
                if time.perf_counter() - start > args.budget:
                    print(f"budget spent: round {round_} {spec} not measured", flush=True)
                    continue
                try:
                    result = measure(spec, genotype_file, Path(tmp) / f"run{runs}", args.batches,
                                     2 if spec["compile"] else 1)
                except Exception as error:  # noqa: BLE001 - a compiler failure is a result too
                    print(f"{spec} failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}", flush=True)
                    continue
                finally:
                    runs += 1
                results[i] = max(results.get(i, (0.0, 0.0)), result)
                print(f"round {round_}: {spec} {result[0]:.1f} img/s, first steps {result[1]:.1f} s", flush=True)
    report(args, rows, results, header, start)


def report(args, rows: list[dict], results: dict, header: str, start: float) -> None:
    base = next(results[i][0] for i, spec in enumerate(rows) if spec == row(True, "per_step_tcalls", False, "channels_last"))
    # deterministic, T calls, eager, channels-last: kss's default before issue 21
    lines = [f"`python benchmarks/train_speed.py{''.join(' ' + a for a in sys.argv[1:])}`", "", header, "",
             "| trainer.deterministic | model.batch_norm | model.compile | layout | images/s | vs before | first steps (s) |",
             "|---|---|---|---|---|---|---|"]
    for i, spec in enumerate(rows):
        rate, first = results.get(i, (None, None))
        cells = [str(spec["deterministic"]).lower(), spec["batch_norm"], str(spec["compile"]).lower(), spec["layout"]]
        cells += ["not measured (budget or failure: see the log)", "", ""] if rate is None else [f"{rate:.1f}", f"{rate / base:.2f}x", f"{first:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{time.perf_counter() - start:.0f} s in all")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
