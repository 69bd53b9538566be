"""The entry points as a new user meets them: refusals in one line, exit 2 and nothing left behind;
help pages that list only what each command reads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from kss.cli import checked, config_error, run_task
from kss.errors import KssError
from tests.conftest import CONF

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("search", "train", "eval", "sweep", "proxy")


def run(script: str, *args, root: Path | None = None, timeout=300):
    env = dict(os.environ)
    if root is not None:  # outputs/ and data/ under a folder of the test's own
        env |= {"KSS_ROOT": str(root), "KSS_DATA_DIR": str(root / "data")}
    return subprocess.run([sys.executable, f"{script}.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def one_line_exit_2(result, refused: bool = True) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert not refused or "└── " not in result.stdout  # no config tree before a refusal
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def groups(config_name: str) -> list[str]:
    """The config groups a command composes (those --help lists)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    return sorted(g for g in choices if not g.startswith("hydra/") and g not in ("base", "train")) + ["hydra/launcher"]


@pytest.mark.parametrize("config_name", ["search", "train", "eval"])
def test_an_unknown_option_of_every_group_is_one_line_with_the_valid_options(config_name):
    for group in groups(config_name):
        with pytest.raises(MissingConfigException) as info:
            with initialize_config_dir(config_dir=CONF, version_base="1.3"):
                compose(config_name=config_name, overrides=[f"{group}=nope"])
        message = config_error(info.value)
        options = sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))
        if group == "hydra/launcher":
            options = info.value.options  # Hydra's own launchers and kss's
        assert message.startswith(f"{group}=nope is not an option; use one of "), message
        assert all(option in message for option in options) and "\n" not in message


@pytest.mark.slow
def test_cli_unknown_options_and_keys_exit_2_in_one_line(tmp_path):
    line = one_line_exit_2(run("search", "kernel_set=set9", root=tmp_path))
    assert line == ("error: kernel_set=set9 is not an option; use one of set1, set2, set3, set4, set5, set6 "
                    "or kernel_set.kernels=[...]")
    assert "optimizer=rmsprop is not an option; use one of adam, adamw, sgd" in one_line_exit_2(
        run("train", "optimizer=rmsprop", root=tmp_path))
    assert "+no_such_key=1" in one_line_exit_2(run("eval", "no_such_key=1", root=tmp_path))
    assert one_line_exit_2(run("eval", "ckpt_path=x", "model=tiny", root=tmp_path)) == (
        "error: eval.py takes the model from the checkpoint; drop model=...")
    assert not (tmp_path / "outputs").exists()


def unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot create (root ignores file modes, so /sys where it is read-only)."""
    for candidate in (Path("/sys/kss-test"), tmp_path / "ro"):
        try:
            candidate.mkdir()
        except OSError:
            return candidate
        candidate.rmdir()
    pytest.skip("no unwritable folder here")


@pytest.mark.slow
def test_a_read_only_output_folder_is_one_line_and_exit_2(tmp_path):
    folder = unwritable(tmp_path)
    tiny = ["dataset=synthetic", "model=tiny", "iters=2"]
    line = one_line_exit_2(run("search", *tiny, f"hydra.run.dir={folder}/run"))
    assert line.startswith(f"error: cannot write to {folder}") and "hydra.run.dir" in line
    line = one_line_exit_2(run("train", *tiny, f"paths.output_dir={folder}/outputs"))
    assert line.startswith(f"error: cannot write to {folder}") and "paths.output_dir" in line


@pytest.mark.slow
@pytest.mark.parametrize("script, args", [
    ("train", ["dataset=cifar10", "model=tiny", "iters=5", "dataset.download=false"]),  # no CIFAR here
    ("train", ["dataset=synthetic", "iters=2", "score.batch_size=300"]),  # refused before loggers and files
    ("train", ["dataset=synthetic", "model=tiny", "iters=2", "model.compile=maybe"]),
    ("search", ["dataset=cifar10", "model=tiny", "iters=5", "dataset.download=false"]),
    ("eval", ["ckpt_path=/nonexistent/run", "dataset=synthetic"]),
    ("sweep", ["kernel_sets=[set9]", "dataset=synthetic"]),
    ("proxy", ["kernel_sets=[set1]", "proxy.per_set=2", "dataset=synthetic"]),
])
def test_refused_commands_leave_no_directory_and_no_lock_files(tmp_path, script, args):
    one_line_exit_2(run(script, *args, root=tmp_path))
    assert list(tmp_path.iterdir()) == []  # no outputs/, no run directory, no data/ or download lock


@pytest.mark.slow
def test_a_refused_command_keeps_a_directory_that_was_there_before(tmp_path):
    kept, empty = tmp_path / "outputs" / "kept", tmp_path / "outputs" / "empty"
    kept.mkdir(parents=True)
    (kept / "candidates.jsonl").write_text("")
    empty.mkdir()
    for run_dir in (kept, empty):
        one_line_exit_2(run("search", "dataset=synthetic", "iters=0", f"hydra.run.dir={run_dir}"))
    assert (kept / "candidates.jsonl").exists() and empty.is_dir()


@pytest.mark.slow
def test_a_dry_run_writes_nothing(tmp_path):
    result = run("sweep", "dataset=synthetic", "iters=[2]", "kernel_sets=[set1]", "train=false", "dry_run=true",
                 root=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 search jobs on synthetic" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_sweep_with_a_failing_job_exits_2_naming_its_failed_json(tmp_path):
    result = run("sweep", "dataset=synthetic", "iters=[2]", "kernel_sets=[set1,set3]", "train=false",
                 "score.batch_size=300", "wandb.mode=disabled", "progress=false", "name=bad", root=tmp_path)
    line = one_line_exit_2(result, refused=False)  # it ran: the tree, the jobs, then the one line
    jobs = tmp_path / "outputs" / "sweep" / "bad" / "jobs"
    failed = [jobs / "1x1_3x3_2x_seed0" / "failed.json", jobs / "3x3_5x5_2x_seed0" / "failed.json"]
    assert line.startswith("error: 2 of 2 jobs failed") and all(str(f) in line for f in failed)
    assert all(f.exists() for f in failed) and (jobs.parent / "summary.md").exists()  # what it could, written
    assert "score.batch_size=300 is larger than the synthetic training split" in (jobs.parent / "summary.md").read_text()


# The groups each command reads; --help lists these and no others.
HELP_GROUPS = {
    "search": {"kernel_set", "iterations", "dataset", "model", "neuron", "score", "cost", "experiment", "logger",
               "extras", "paths"},
    "train": {"kernel_set", "iterations", "dataset", "model", "neuron", "score", "cost", "optimizer", "scheduler",
              "trainer", "callbacks", "experiment", "debug", "hparams_search", "logger", "extras", "paths"},
    "eval": {"dataset", "cost", "extras", "paths"},
    "sweep": {"dataset", "model", "neuron", "score", "cost", "trainer", "experiment", "logger", "extras", "paths"},
    "proxy": {"iterations", "dataset", "model", "neuron", "score", "cost", "optimizer", "scheduler", "trainer",
              "callbacks", "experiment", "logger", "extras", "paths"},
}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_help_page_says_what_the_command_does_with_two_examples_and_only_its_groups(script):
    result = run(script, "--help")
    assert result.returncode == 0, result.stderr
    header, rest = result.stdout.split("== Configuration groups ==")
    assert header.startswith(f"{script}.py: ") and "powered by Hydra" not in header
    assert header.count(f"python {script}.py ") == 2
    listed = {line.split(":")[0] for line in rest.split("== Config ==")[0].splitlines() if ": " in line}
    assert listed == HELP_GROUPS[script]


def test_the_config_tree_is_printed_only_once_the_input_is_valid(compose_cfg, capsys):
    def refused(cfg):
        raise KssError("bad input")

    with pytest.raises(SystemExit) as info:
        run_task(refused, compose_cfg(), "search")
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and err == "error: bad input\n"

    def valid(cfg):
        checked()
        print("working")
        return {}

    run_task(valid, compose_cfg(), "search")
    out = capsys.readouterr().out
    assert out.index("kernel_set") < out.index("working")  # the tree, then the work
