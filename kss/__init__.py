"""kss: kernel-size scaling for embedded spiking neural networks.

Where things are, by stage: the search space in `space/` (the op registry `ops.py`, genotype,
network, parameters, cost), the search in `search/` (score, setup, candidate, loop, shards, guided),
training in `train/` (data, module), studies in `study/`, evaluation and export in `deploy/`, and the
config-reading tasks the scripts call in `tasks/`.
"""

import os

from kss.config import register_resolvers

register_resolvers()
# Quiet by default: W&B's banner lines say nothing a kss run does not (WANDB_SILENT=false shows them).
os.environ.setdefault("WANDB_SILENT", "true")
