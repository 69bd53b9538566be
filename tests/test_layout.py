"""The house rules of kss/ (issue 17), checked from the source so a later change cannot quietly undo them:
no import cycles, kss imports at the top of modules, and stage packages that never read the Hydra config."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("space", "search", "train", "study", "deploy")
CONFIG_READERS = ("kss.config", "kss.cli", "kss.tasks")  # where a composed DictConfig is turned into objects


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "benchmarks" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, *module.imports(ROOT)


def test_there_is_no_import_cycle(graph):
    module, edges, _, _ = graph
    assert module.cycles(edges) == []


def test_kss_imports_sit_at_the_top_of_modules(graph):
    _, _, inner, _ = graph
    # the one allowed: kss.config -> kss.train.data (lightning and torchvision cost ~2 s that --help and refusals skip)
    assert [(m, t) for m, t, _ in inner] == [("kss.config", "kss.train.data")]


def test_stage_packages_never_read_the_config(graph):
    _, edges, _, _ = graph
    for module, targets in edges.items():
        if module.split(".")[1:2] and module.split(".")[1] in STAGES:
            readers = [t for t in targets if t.startswith(CONFIG_READERS)]
            assert not readers, f"{module} imports {readers}: hand it plain objects from kss/tasks instead"
    for stage in STAGES:
        for path in (ROOT / "kss" / stage).rglob("*.py"):
            assert "DictConfig" not in path.read_text(), f"{path} takes a DictConfig"


def test_the_graph_sees_a_cycle_when_there_is_one(graph, tmp_path):
    module = graph[0]
    (tmp_path / "kss").mkdir()
    (tmp_path / "kss" / "a.py").write_text("from kss.b import x\n")
    (tmp_path / "kss" / "b.py").write_text("def f():\n    from kss.a import y\n")
    edges, inner, _ = module.imports(tmp_path)
    assert module.cycles(edges) == [["kss.a", "kss.b"]] and [(m, t) for m, t, _ in inner] == [("kss.b", "kss.a")]
