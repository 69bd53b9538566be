from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import kss  # noqa: F401  (registers resolvers)

CONF = str(Path(__file__).resolve().parents[1] / "conf")
TINY = ["dataset=synthetic", "model=tiny", "iters=4", "score.batch_size=16", "progress=false", "device=cpu",
        "wandb.mode=disabled"]


@pytest.fixture
def compose_cfg():
    """Compose the real config (as the scripts do) with overrides; tiny by default."""

    def make(*overrides, config_name="search", tiny=True, hydra=False):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            return compose(config_name=config_name, overrides=[*(TINY if tiny else []), *overrides],
                           return_hydra_config=hydra)

    return make


@pytest.fixture
def interrupt_scoring(monkeypatch):
    """interrupt_scoring(n): the search's n-th scored candidate raises KeyboardInterrupt (a Ctrl-C);
    returns a function that puts the real scoring back."""
    import kss.search.candidate

    real = kss.search.candidate.score_network

    def arm(n: int):
        calls = []

        def score(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(kss.search.candidate, "score_network", score)
        return lambda: monkeypatch.setattr(kss.search.candidate, "score_network", real)

    return arm
