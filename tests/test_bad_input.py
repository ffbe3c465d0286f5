"""Each bad input: one line on stderr that says what is wrong and how to fix it, exit code 2, nothing stored."""

import pickle

import pytest
import torch

from tests.helpers import make_cifar_colour, run_cli

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
    "missing CIFAR-10": (["--dataset", "cifar10"], lambda root: None, "cifar-10-batches-py"),
    "corrupt CIFAR-10": (["--dataset", "cifar10"], _cifar_corrupt, "corrupt"),
    "truncated CIFAR-10": (["--dataset", "cifar10"], _cifar_truncated, "corrupt"),
    "corrupt Fashion-MNIST": (["--dataset", "fashion-mnist"], _fmnist_corrupt, "corrupt"),
    "unknown device": (["--device", "tpu", "--dataset", "fashion-mnist"], None, "--device"),
    "unknown precision": (["--precision", "fp8", "--dataset", "fashion-mnist"], None, "--precision"),
}
if not torch.cuda.is_available():  # on a machine without a GPU, asking for one is a user error too
    CASES["no CUDA"] = (["--device", "cuda", "--dataset", "fashion-mnist"], None, "--device")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2_nothing_stored(case, tmp_path, fashion_mnist_available):
    args, make_data, needle = CASES[case]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if make_data:
        make_data(data_dir)
    results = tmp_path / "results"
    proc = run_cli("train", *TINY, *args, "--data-dir", data_dir, "--results-dir", results, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(results.glob("runs/*")), "a run was left in the store"
    assert not (results / "results.duckdb").exists()


def test_unwritable_results_dir(tmp_path, fashion_mnist_available):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_cli("train", *TINY, "--dataset", "fashion-mnist", "--results-dir", blocker / "results", check=False)
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: results dir") and "--results-dir" in line


def test_unknown_option_and_model_errors_are_one_line():
    for args in (["train", "--bogus"], ["model", "--n", "0"], ["model", "--shortcut", "Z"], ["train", "--n", "x"]):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2, args
        assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
