"""kss: kernel-size scaling for embedded spiking neural networks.

Where things are: the search space in `genotype.py` (ops, cells, sampling), the network in
`network.py`, the R-score in `score.py`, the search loop in `search.py`, data in `data.py`.
"""

import os

from kss.config import register_resolvers

register_resolvers()
# Quiet by default: W&B's banner lines say nothing a kss run does not (WANDB_SILENT=false shows them).
os.environ.setdefault("WANDB_SILENT", "true")
