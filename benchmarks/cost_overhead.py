"""What does costing every candidate add to a search? (cost.every_candidate)

    python benchmarks/cost_overhead.py experiment=fmnist_cpu kernel_set=set3 --candidates 6

Scores the same candidates twice, interleaved so that a shared machine's load hits both alike:
once as a default search does (R-score only), once with cost.every_candidate=true (R-score plus
one counted forward pass, kss.space.cost). Prints seconds per candidate and the ratio. Overrides are
train.py's (Hydra syntax).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from hydra import compose, initialize_config_dir

import kss  # noqa: F401
from kss import config as C
from kss.search.candidate import evaluate_candidate
from kss.search.loop import setup_from_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=6)
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["device=cpu", "dataset.num_workers=0", *overrides])
    data = C.data_module(cfg)
    plain = setup_from_config(cfg, data)
    costed = dataclasses.replace(plain, cost_every=True)
    batches = data.search_batches(plain.batch_size, plain.repeats, plain.seed)
    device = C.resolve_device("cpu")
    evaluate_candidate(plain, 0, batches, device)  # warm-up, untimed
    times = {"score only": [], "score + cost": []}
    for index in range(args.candidates):
        for name, setup in (("score only", plain), ("score + cost", costed)):
            start = time.perf_counter()
            evaluate_candidate(setup, index, batches, device)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["score only"])
    with_cost = statistics.median(times["score + cost"])
    print(f"{C.setting_tag(plain.kernels)}, {cfg.dataset.name}, batch {plain.batch_size} x {plain.repeats} repeats, "
          f"{args.candidates} candidates (median s/candidate): score only {base:.2f}, score + cost {with_cost:.2f}, "
          f"ratio {with_cost / base:.2f}x")


if __name__ == "__main__":
    main()
