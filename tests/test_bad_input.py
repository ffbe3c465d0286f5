"""Each bad input: one line on stderr that says what is wrong and how to fix it, exit code 2, nothing stored. A
condition that may pass by itself (the data set not yet there, no GPU visible) is one line too, with exit code 75,
which a Kubernetes Job retries.

Every command goes through the CLI's real entry point; the cases of a test run one after another in one process
(tests/helpers.run_cli_many), so torch is imported once, not once per case."""

import pickle

import pytest
import torch

from resnet_study.core import EXIT_RETRY, EXIT_USER_ERROR
from tests.helpers import make_cifar_colour, run_cli_many

pytestmark = pytest.mark.slow  # real training processes

TINY = ["--n", "1", "--epochs", "2", "--train-limit", "300", "--test-limit", "100", "--device", "cpu"]


def _cifar_corrupt(root):
    make_cifar_colour(root, per_batch=20, test=20)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")


def _cifar_truncated(root):
    make_cifar_colour(root, per_batch=20, test=20)
    path = root / "cifar-10-batches-py" / "test_batch"
    d = pickle.loads(path.read_bytes())
    d[b"data"] = d[b"data"][:, :100]
    path.write_bytes(pickle.dumps(d))


def _fmnist_corrupt(root):
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / stem).write_bytes(b"\x00\x00\x08\x03garbage")


CASES = {
    "n below 1": (["--n", "0", "--dataset", "fashion-mnist"], None, "--n"),
    "unknown dataset": (["--dataset", "imagenet"], None, "--dataset"),
    "unknown shortcut": (["--shortcut", "C", "--dataset", "fashion-mnist"], None, "--shortcut"),
    "unknown augmentation": (["--augment", "mixup", "--dataset", "fashion-mnist"], None, "--augment"),
    "epochs below 1": (["--epochs", "0", "--dataset", "fashion-mnist"], None, "--epochs"),
    "milestone beyond the last epoch": (["--epochs", "10", "--milestones", "5,12", "--dataset", "fashion-mnist"],
                                        None, "beyond the last epoch"),
    "milestones not numbers": (["--milestones", "five", "--dataset", "fashion-mnist"], None, "--milestones"),
    "validation split as large as the training set": (["--val-split", "300", "--dataset", "fashion-mnist"], None,
                                                      "--val-split"),
    "missing CIFAR-10": (["--dataset", "cifar10"], lambda root: None, "cifar-10-batches-py", EXIT_RETRY),
    "corrupt CIFAR-10": (["--dataset", "cifar10"], _cifar_corrupt, "corrupt"),
    "truncated CIFAR-10": (["--dataset", "cifar10"], _cifar_truncated, "corrupt"),
    "corrupt Fashion-MNIST": (["--dataset", "fashion-mnist"], _fmnist_corrupt, "corrupt"),
    "unknown device": (["--device", "tpu", "--dataset", "fashion-mnist"], None, "--device"),
    "unknown precision": (["--precision", "fp8", "--dataset", "fashion-mnist"], None, "--precision"),
}
if not torch.cuda.is_available():  # on a machine without a GPU, asking for one is a user error too
    CASES["no CUDA"] = (["--device", "cuda", "--dataset", "fashion-mnist"], None, "--device", EXIT_RETRY)
SEEDS_CASES = {  # --seeds: what to write instead
    "seeds empty": (["--seeds", ""], "--seeds: no seed in ''; write --seeds 0,1,2 or a range such as --seeds 0-4"),
    "seeds negative": (["--seeds", "0,-1"], "--seeds: cannot read '-1' (seeds are >= 0); write --seeds 0,1,2"),
    "seeds duplicated": (["--seeds", "0,1,1"], "--seeds: seed 1 is given twice; list each seed once, e.g. --seeds 0,1"),
    "seeds unparseable": (["--seeds", "one,two"], "--seeds: cannot read 'one'; write --seeds 0,1,2"),
    "seeds backwards": (["--seeds", "4-2"], "--seeds: the range '4-2' runs backwards; write --seeds 2-4"),
    "seeds and seed": (["--seeds", "0,1", "--seed", "3"], "--seed and --seeds both given; write --seeds 3,..."),
}
for name, (args, needle) in SEEDS_CASES.items():
    CASES[name] = (["--dataset", "fashion-mnist", *args], None, needle)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, fashion_mnist_available):
    """Every case as `train` in one process: {case: (proc, results dir)}."""
    argvs, results = [], {}
    for case in sorted(CASES):
        args, make_data = CASES[case][:2]
        root = tmp_path_factory.mktemp("case")
        (root / "data").mkdir()
        if make_data:
            make_data(root / "data")
        results[case] = root / "results"
        argvs.append(["train", *TINY, *args, "--data-dir", root / "data", "--results-dir", results[case]])
    return {case: (proc, results[case]) for case, proc in zip(sorted(CASES), run_cli_many(argvs))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2_nothing_stored(case, outcomes):
    needle = CASES[case][2]
    expected_code = CASES[case][3] if len(CASES[case]) > 3 else EXIT_USER_ERROR
    proc, results = outcomes[case]
    assert proc.returncode == expected_code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(results.glob("runs/*")), "a run was left in the store"
    assert not (results / "results.duckdb").exists()


def test_unwritable_results_dir_and_unknown_options_are_one_line(tmp_path, fashion_mnist_available):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases = [["train", *TINY, "--dataset", "fashion-mnist", "--results-dir", blocker / "results"],
             ["train", "--bogus"], ["model", "--n", "0"], ["model", "--shortcut", "Z"], ["train", "--n", "x"],
             ["train", "--shortcut", "Z"], ["train", "--dataset", "imagenet"],
             ["results", "table", "--dataset", "imagenet", "--results-dir", tmp_path],
             ["sweep", "plan", "demo.yaml", "--device", "tpu", "--results-dir", tmp_path],
             ["train", "--device", "tpu", "--dataset", "fashion-mnist"]]
    procs = run_cli_many(cases)
    for args, proc in zip(cases, procs):
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert procs[0].stderr.startswith("error: results dir") and "--results-dir" in procs[0].stderr
    # a bad choice reads the same whichever command it comes from (core.vocab.check_choice)
    assert procs[3].stderr == procs[5].stderr == "error: --shortcut: unknown shortcut 'Z'; use A, B, none\n"
    assert procs[6].stderr == procs[7].stderr == ("error: --dataset: unknown dataset 'imagenet'; use cifar10, fashion-mnist, cifar100, mnist, svhn "
                                                         "or a path to a folder or .npz of your own\n")
    assert procs[8].stderr == procs[9].stderr == "error: --device: unknown device 'tpu'; use auto, cpu, cuda\n"
