"""Does a larger kernel cost energy as well as memory? The search winners' cost per kernel set.

    python benchmarks/kernel_costs.py outputs/kernel_costs/jobs \
        --trained /work/main/outputs/sweep/fmnist_kernel_seeds2/jobs --test-images 256

Reads every job folder's search.json under the first argument (the winner's cost at
initialisation, which a search records: BN on batch statistics, the first scoring batch) and,
where a folder of the same name under --trained holds a trained checkpoint (metrics.json), loads it
and measures the trained network's cost on the first --test-images test images (kss.space.cost, BN on
running statistics). Prints a markdown table per job and one per kernel set (mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


from kss.names import kernel_set_name, setting_tag
from kss.space.cost import first_images, measure_cost
from kss.train.data import KssDataModule
from kss.deploy.evaluate import load_checkpoint


def trained_cost(job: Path, images_by_dataset: dict, count: int) -> dict | None:
    metrics_file = job / "metrics.json"
    if not metrics_file.exists():
        return None
    metrics = json.loads(metrics_file.read_text())
    module, _ = load_checkpoint(metrics["checkpoint"])
    dataset = metrics["dataset"]
    if dataset not in images_by_dataset:
        data = KssDataModule(dataset, root="data", download=False, batch_size=256, seed=metrics["seed"])
        data.setup("test")
        images_by_dataset[dataset] = first_images(data.test_dataloader(), count)
    cost = measure_cost(module.net, images_by_dataset[dataset])
    return {"cost": cost, "val_acc": metrics.get("best_val_acc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path, help="folder of search job folders (each with search.json)")
    parser.add_argument("--trained", type=Path, help="folder of trained job folders of the same names")
    parser.add_argument("--test-images", type=int, default=256)
    args = parser.parse_args()

    rows, images = [], {}
    for path in sorted(args.jobs.glob("*/search.json")):
        search = json.loads(path.read_text())
        if "energy_uj" not in search:
            sys.exit(f"{path} has no cost: rerun its search command (a finished search reports and adds its cost)")
        trained = trained_cost(args.trained / path.parent.name, images, args.test_images) if args.trained else None
        rows.append({"setting": setting_tag(search["kernels"]), "set": kernel_set_name(search["kernels"]),
                     "seed": search["seed"], "params": search["params"], "int8_kB": search["memory_int8_bytes"] / 1e3,
                     "state_kB": search["neuron_state_bytes"] / 1e3, "sops_init": search["sops"],
                     "energy_init": search["energy_uj"], "rate_init": search["firing_rate"],
                     "sops_trained": trained and trained["cost"]["sops"],
                     "energy_trained": trained and trained["cost"]["energy_uj"],
                     "rate_trained": trained and trained["cost"]["firing_rate"],
                     "val_acc": trained and trained["val_acc"], "macs": search["macs"]})

    def fmt(value, spec):
        return "" if value is None else format(value, spec)

    columns = [("params", ",.0f"), ("int8_kB", ".0f"), ("state_kB", ".1f"), ("sops_init", ",.0f"), ("energy_init", ".3f"),
               ("rate_init", ".3f"), ("sops_trained", ",.0f"), ("energy_trained", ".3f"), ("rate_trained", ".3f"),
               ("val_acc", ".3f")]
    header = ("| | params | int8 weights kB | neuron state kB | SOPs/image (init) | energy uJ/image (init) | firing rate "
              "(init) | SOPs/image (trained) | energy uJ/image (trained) | firing rate (trained) | val acc |")
    print("Per job:\n")
    print(header.replace("| |", "| job |", 1))
    print("|---" * (len(columns) + 1) + "|")
    rows.sort(key=lambda r: (r["set"], r["seed"]))
    for r in rows:
        print(f"| {r['setting']} seed {r['seed']} | " + " | ".join(fmt(r[c], s) for c, s in columns) + " |")
    print("\nPer kernel set, mean over seeds (stem MACs per image: "
          f"{rows[0]['macs']:,.0f}, the same for every set):\n" if rows else "")
    print(header.replace("| |", "| kernel set |", 1))
    print("|---" * (len(columns) + 1) + "|")
    for setting in dict.fromkeys(r["setting"] for r in rows):
        members = [r for r in rows if r["setting"] == setting]

        def mean(key):
            values = [r[key] for r in members if r[key] is not None]
            return statistics.fmean(values) if values else None

        print(f"| {members[0]['set']} ({setting}, {len(members)} seed{'s' if len(members) > 1 else ''}) | "
              + " | ".join(fmt(mean(c), s) for c, s in columns) + " |")


if __name__ == "__main__":
    main()
