import json

import numpy as np
import pytest

from kss.errors import KssError
from kss.space.genotype import (
    BACKWARD_EDGES,
    FORWARD_EDGES,
    Genotype,
    check_fits,
    draw_ops,
    from_snasnet_code,
    load_genotype,
    op_names,
    prune,
    sample_genotype,
)


def ops_from(edges: dict) -> list[list[str]]:
    ops = [["zero"] * 4 for _ in range(4)]
    for (i, j), op in edges.items():
        ops[i][j] = op
    return ops


def test_op_vocabulary_follows_the_kernel_set():
    assert op_names([3, 5]) == ("zero", "skip", "conv3", "conv5", "avgpool3")
    assert op_names([7]) == ("zero", "skip", "conv7", "avgpool3")


def test_prune_drops_nodes_cut_off_from_input_or_output():
    # node 1 is fed by the input but feeds nothing; node 2 feeds the output but nothing feeds it
    ops = ops_from({(0, 1): "conv3", (2, 3): "conv3", (0, 3): "skip"})
    pruned = prune(ops, "forward")
    assert pruned == ops_from({(0, 3): "skip"})


def test_prune_keeps_a_live_path():
    ops = ops_from({(0, 1): "conv3", (1, 2): "skip", (2, 3): "avgpool3", (0, 3): "conv1"})
    assert prune(ops, "forward") == ops


def test_prune_counts_feedback_edges_as_paths():
    # node 1 has no forward input, but node 3 feeds it back; it reaches the output through 1->3
    ops = ops_from({(0, 3): "skip", (1, 3): "conv3", (3, 1): "conv1"})
    assert prune(ops, "backward") == ops
    assert prune(ops, "forward")[1][3] == "zero"  # without feedback node 1 is dead


@pytest.mark.parametrize("cell_type", ["forward", "backward"])
def test_sampler_rules(cell_type):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        g = sample_genotype(rng, [3, 5], cell_type)
        assert g.ops[0][3] != "zero"  # the input->output edge is never zero
        assert prune([list(r) for r in g.ops], cell_type) == [list(r) for r in g.ops]  # already pruned
        assert all(op in op_names([3, 5]) for row in g.ops for op in row)
        assert all(g.ops[i][i] == "zero" for i in range(4))
        if cell_type == "forward":
            assert all(g.ops[i][j] == "zero" for i, j in BACKWARD_EDGES)
        seen.update(op for _, _, op in g.edges())
    assert seen == {"skip", "conv3", "conv5", "avgpool3"}  # every op gets drawn


def test_sampler_is_uniform_per_edge():
    rng = np.random.default_rng(1)
    counts = {op: 0 for op in op_names([1, 3])}
    for _ in range(2000):
        # the raw draw of edge 0->3 is uniform over the non-zero ops once zero is resampled
        counts[sample_genotype(rng, [1, 3], "forward").ops[0][3]] += 1
    assert counts["zero"] == 0
    assert all(350 < counts[op] < 650 for op in ("skip", "conv1", "conv3", "avgpool3"))


def test_json_round_trip_and_readable_names():
    g = sample_genotype(np.random.default_rng(3), [3, 7], "backward")
    data = json.loads(json.dumps(g.to_json()))
    assert Genotype.from_json(data) == g
    assert set(data["edges"]) == {f"{i}->{j}" for i, j in FORWARD_EDGES + BACKWARD_EDGES}


def test_published_snasnet_genotypes_import():
    # SNASNet's codes: 0 zero, 1 skip, 2 conv1x1, 3 conv3x3, 4 avgpool3 (Neuronal_Cell.__init__)
    cifar10 = load_genotype("snasnet_cifar10")  # 0303 0030 2002 0200
    assert cifar10.cell_type == "backward"
    assert cifar10.edges() == [
        (0, 1, "conv3"), (1, 2, "conv3"), (0, 3, "conv3"), (2, 3, "conv1"),  # forward edges
        (2, 0, "conv1"), (3, 1, "conv1"),  # feedback edges
    ]
    cifar100 = load_genotype("snasnet_cifar100")  # 0302 0030 3003 0000
    assert cifar100.cell_type == "backward"
    assert cifar100.edges() == [(0, 1, "conv3"), (1, 2, "conv3"), (0, 3, "conv1"), (2, 3, "conv3"), (2, 0, "conv3")]
    assert load_genotype("0302 0030 3003 0000") == cifar100
    # the same codes with another two-kernel set (A < B): 2 -> A, 3 -> B
    other = from_snasnet_code("0303 0030 2002 0200", kernels=(5, 3))
    assert other.ops[0][1] == "conv5" and other.ops[2][0] == "conv3"


def test_backward_sampler_draws_one_direction_per_pair():
    rng = np.random.default_rng(7)
    draws, forward_non_zero = 4000, 0
    for _ in range(draws):
        ops = draw_ops(rng, [1, 3], "backward")  # raw, before pruning
        for i, j in FORWARD_EDGES:
            assert ops[i][j] == "zero" or ops[j][i] == "zero", f"both directions of {i}-{j}"
            forward_non_zero += ops[i][j] != "zero"
    # a fair coin for the direction, then a uniform op over 5 (zero included): 1/2 * 4/5
    assert abs(forward_non_zero / (draws * len(FORWARD_EDGES)) - 0.4) < 0.02
    for _ in range(1000):
        g = sample_genotype(rng, [1, 3], "backward")
        assert g.ops[0][3] != "zero" and g.ops[3][0] == "zero"  # 0->3 is drawn, so 3->0 never is
        assert all(g.ops[i][j] == "zero" or g.ops[j][i] == "zero" for i, j in FORWARD_EDGES)


def test_forward_sampler_draws_forward_edges_only():
    rng = np.random.default_rng(8)
    non_zero = 0
    for _ in range(2000):
        ops = draw_ops(rng, [1, 3], "forward")
        assert all(ops[i][j] == "zero" for i, j in BACKWARD_EDGES)
        non_zero += sum(ops[i][j] != "zero" for i, j in FORWARD_EDGES)
    assert abs(non_zero / (2000 * len(FORWARD_EDGES)) - 0.8) < 0.02


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"edges": {}}', "'cell_type' and 'edges'"),
        ('{"cell_type": "sideways", "edges": {}}', "unknown cell type"),
        ('{"cell_type": "forward", "edges": {"0->1": "conv4"}}', "unknown op"),
        ('{"cell_type": "forward", "edges": {"3->1": "conv3"}}', "not an edge of a forward cell"),
        ('{"cell_type": "forward", "edges": {"a": "conv3"}}', "not of the form"),
        ('{"best_genotype": null}', "holds no genotype"),
    ],
)
def test_malformed_genotype_files_give_one_line(tmp_path, content, message):
    path = tmp_path / "g.json"
    path.write_text(content)
    with pytest.raises(KssError, match=message) as info:
        load_genotype(str(path))
    assert "\n" not in str(info.value)


def test_genotype_that_does_not_fit_the_config():
    g = load_genotype("snasnet_cifar10")
    with pytest.raises(KssError, match="does not offer"):
        check_fits(g, [3, 5], "backward")
    with pytest.raises(KssError, match="model.cell_type=backward"):
        check_fits(g, [1, 3], "forward")
    check_fits(g, [1, 3], "backward")


def test_unknown_genotype_source():
    with pytest.raises(KssError, match="neither a file nor a published name"):
        load_genotype("no_such_thing")
    with pytest.raises(KssError, match="16 digits"):
        from_snasnet_code("0303 0030 2002 020")
