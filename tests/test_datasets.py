"""Every data set format end to end (issue 26): CIFAR-100 pickles, MNIST idx files, SVHN .mat files, a folder of
mixed images, an .npz; each made here by the test (never a download), trained for a few epochs on the CPU to a test
error well below chance, its confusion matrix classes x classes, its comparison table and figure served; the user
data's identity (a content hash in the name and the run id), its decode cache, and its bad input.

Cost on the shared 2-core machine: test_each_format_trains_below_chance 29 s (five trainings in one process, and a
server), test_user_data_bad_input 2.4 s, test_identity_follows_the_content 0.03 s, test_edited_folder_trains_a_new_run
9 s (two processes), test_bench_data_times_the_decode_and_the_cached_second_run 0.1 s."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import scipy.io
from PIL import Image

from resnet_study.core import EXIT_RETRY, EXIT_USER_ERROR, RetryLater, StudyError, datasets, settings
from resnet_study.core.config import RunConfig
from tests.helpers import Server, cli_env, query, run_cli, run_cli_many, store_fingerprint

pytestmark = pytest.mark.slow  # real training processes


def _colours(k: int, seed: int = 0) -> np.ndarray:
    """k RGB colours far apart (a grid over the cube), one per class: learnable from the pixels in a few epochs."""
    side = int(np.ceil(k ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.linspace(30, 225, side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return grid[np.random.default_rng(seed).permutation(len(grid))[:k]]


def _images(labels: np.ndarray, k: int, rng, noise: float = 8.0) -> np.ndarray:
    """uint8 (N, 32, 32, 3): each image its class's colour plus noise."""
    img = _colours(k)[labels][:, None, None, :] + rng.normal(0, noise, (len(labels), 32, 32, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_cifar100(root, train: int = 2000, test: int = 500):
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, count in (("train", train), ("test", test)):
        labels = np.arange(count) % 100
        data = _images(labels, 100, rng).transpose(0, 3, 1, 2).reshape(count, 3072)  # R, G, B planes
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [n.encode() for n in datasets.CIFAR100_CLASSES]}, f)


def _idx(path, array: np.ndarray):
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def make_mnist(root, train: int = 600, test: int = 200):
    """MNIST/raw/*.gz: digit d is a grey level (28x28; survives the paper's crops and flips)."""
    rng = np.random.default_rng(2)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 10
        x = np.clip(25 + 22 * labels[:, None, None] + rng.normal(0, 4, (count, 28, 28)), 0, 255)
        _idx(raw / f"{prefix}-images-idx3-ubyte.gz", x)
        _idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)


def make_svhn(root, train: int = 600, test: int = 200):
    """train_32x32.mat / test_32x32.mat as torchvision downloads them: X (32, 32, 3, N), y (N, 1), 10 = digit 0."""
    rng = np.random.default_rng(3)
    for name, count in (("train", train), ("test", test)):
        digits = np.arange(count) % 10
        x = _images(digits, 10, rng).transpose(1, 2, 3, 0)
        scipy.io.savemat(root / f"{name}_32x32.mat", {"X": x, "y": np.where(digits == 0, 10, digits)[:, None]})


def make_folder(root, per_class: int = 40, test_per_class: int = 12, classes=("blue", "green", "red"), seed=4):
    """PATH/{train,test}/<class>/ of PNG and JPEG files of mixed sizes and modes (RGB, RGBA, grayscale, palette):
    a class is its colour's channel, so the grayscale images carry the class in their brightness only."""
    rng = np.random.default_rng(seed)
    colour = {"red": (220, 30, 30), "green": (30, 220, 30), "blue": (30, 30, 220)}
    for split, count in (("train", per_class), ("test", test_per_class)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
                arr = np.clip(np.array(colour[c]) + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)
                img = Image.fromarray(arr)
                mode = ("RGB", "RGBA", "L", "P")[i % 4]
                img = img.convert(mode) if mode != "RGBA" else img.convert("RGBA")
                if i % 3 == 0 and mode in ("RGB", "L"):
                    img.save(root / split / c / f"{i}.jpg", quality=95)
                else:
                    img.save(root / split / c / f"{i}.png")
    return root


def make_npz(path, train: int = 400, test: int = 100):
    """An .npz of 4 classes, 28x28x3 images (resized to 32 by the rule), with class names."""
    rng = np.random.default_rng(5)
    ytr, yte = np.arange(train) % 4, np.arange(test) % 4
    x = lambda y: _images(y, 4, rng)[:, 2:30, 2:30]  # noqa: E731
    np.savez(path, x_train=x(ytr), y_train=ytr, x_test=x(yte), y_test=yte,
             classes=np.array(["north", "east", "south", "west"]))
    return path


TRAIN = ["train", "--n", "1", "--device", "cpu", "--progress", "json"]


def test_each_format_trains_below_chance(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    make_cifar100(data)
    make_mnist(data)
    make_svhn(data)
    folder = make_folder(tmp_path / "my-images")
    npz = make_npz(tmp_path / "arrays.npz")
    results = tmp_path / "results"
    common = ["--data-dir", data, "--results-dir", results]
    small = ["--epochs", "4", "--batch-size", "32"]
    cases = {"cifar100": ["--epochs", "4", "--batch-size", "64"], "mnist": small, "svhn": small,
             str(folder): ["--epochs", "4", "--batch-size", "16"], str(npz): small}
    env = cli_env(**{settings.CACHE.name: str(tmp_path / "cache")})
    procs = run_cli_many([[*TRAIN, "--dataset", name, *args, *common] for name, args in cases.items()], env=env)
    for proc in procs:
        assert proc.returncode == 0, proc.stderr
    runs = {r["dataset"]: r for r in query(results, "SELECT dataset, run_id, test_error, train_size, test_size, "
                                                     "data_fingerprint FROM runs")}
    cm = {r["dataset"]: r for r in query(results, "SELECT r.dataset, count(*) AS cells, sum(c.count) AS images, "
                                                   "count(DISTINCT c.true_class) AS names FROM confusion c JOIN runs "
                                                   "r USING (run_id) WHERE c.split = 'test' GROUP BY r.dataset")}
    chance = {"cifar100": 0.99, "mnist": 0.9, "svhn": 0.9}
    user = {n for n in runs if "@" in n}
    assert {n.split("@")[0] for n in user} == {"my-images", "arrays"}
    errors = {name: run["test_error"] for name, run in runs.items()}
    for name, run in runs.items():
        k = 100 if name == "cifar100" else 3 if name.startswith("my-images@") else 4 if "@" in name else 10
        assert cm[name]["cells"] == k * k and cm[name]["names"] == k and cm[name]["images"] == run["test_size"]
        assert run["test_error"] < 0.5 * chance.get(name, 1 - 1 / k), errors  # well below chance
    folder_run = runs[next(n for n in user if n.startswith("my-images@"))]
    assert folder_run["data_fingerprint"].startswith(folder_run["dataset"].split("@")[1])
    classes = query(results, f"SELECT DISTINCT true_class FROM confusion WHERE run_id = '{folder_run['run_id']}' "
                             "ORDER BY 1")
    assert [c["true_class"] for c in classes] == ["blue", "green", "red"]
    assert (tmp_path / "cache" / "datasets" / f"{folder_run['dataset']}.npz").is_file()  # decoded once, cached

    server = Server(results)
    try:
        for name, run in runs.items():
            table = server.get("/tables/comparison", params={"dataset": name})
            assert table.status_code == 200, table.text
            labels = {r["dataset"] for r in table.json()["rows"]}
            assert labels == {name}, labels
            png = server.get("/figures/confusion.png", params={"run_id": run["run_id"]})
            assert png.status_code == 200 and png.content[:4] == b"\x89PNG", (name, png.status_code)
            curves = server.get("/figures/error-curves.svg", params={"dataset": name})
            assert curves.status_code == 200 and datasets.title(name) in curves.text, name
    finally:
        server.stop()


def _bad_folder(tmp_path, what: str):
    root = make_folder(tmp_path / what, per_class=2, test_per_class=1)
    if what == "no-test":
        for f in sorted((root / "test").rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (root / "test").rmdir()
    elif what == "one-class":
        for c in ("green", "red"):
            for split in ("train", "test"):
                for f in (root / split / c).iterdir():
                    f.unlink()
                (root / split / c).rmdir()
    elif what == "empty-class":
        for f in (root / "train" / "red").iterdir():
            f.unlink()
    elif what == "unreadable":
        (root / "train" / "red" / "broken.png").write_bytes(b"not a png at all")
    elif what == "test-only-class":
        (root / "test" / "violet").mkdir()
        Image.new("RGB", (32, 32)).save(root / "test" / "violet" / "0.png")
    return root


def test_user_data_bad_input(tmp_path):
    """Each case: one line, exit 2 (75 for a path that may still appear), nothing in the store."""
    labels_out = tmp_path / "labels.npz"
    np.savez(labels_out, x_train=np.zeros((4, 32, 32), np.uint8), y_train=np.array([0, 1, 2, 3]),
             x_test=np.zeros((2, 32, 32), np.uint8), y_test=np.array([0, 7]), classes=np.array(["a", "b", "c", "d"]))
    cases = {
        "no such path": (str(tmp_path / "nowhere"), EXIT_RETRY, "no such file or folder"),
        "no test/": (_bad_folder(tmp_path, "no-test"), EXIT_USER_ERROR, "no test/ folder"),
        "one class": (_bad_folder(tmp_path, "one-class"), EXIT_USER_ERROR, "at least 2"),
        "an empty class": (_bad_folder(tmp_path, "empty-class"), EXIT_USER_ERROR, "train/red has no PNG or JPEG"),
        "a file PIL cannot open": (_bad_folder(tmp_path, "unreadable"), EXIT_USER_ERROR, "train/red/broken.png"),
        "npz labels out of range": (labels_out, EXIT_USER_ERROR, "y_test has label 7, outside 0..3"),
        "a test class absent from training": (_bad_folder(tmp_path, "test-only-class"), EXIT_USER_ERROR,
                                              "test class 'violet'"),
    }
    results = tmp_path / "results"
    results.mkdir()
    before = store_fingerprint(results)
    env = cli_env(**{settings.CACHE.name: str(tmp_path / "cache")})
    procs = run_cli_many([[*TRAIN, "--epochs", "1", "--dataset", path, "--results-dir", results]
                          for path, _, _ in cases.values()], env=env)
    for (case, (_, code, needle)), proc in zip(cases.items(), procs):
        lines = proc.stderr.splitlines()
        assert proc.returncode == code, (case, proc.returncode, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (case, proc.stderr)
    assert store_fingerprint(results) == before


def test_identity_follows_the_content(tmp_path):
    """Two folders of one name and different content: two data sets, two run ids; the same content: one."""
    a = make_folder(tmp_path / "a" / "pics", per_class=3, test_per_class=1, seed=10)
    b = make_folder(tmp_path / "b" / "pics", per_class=3, test_per_class=1, seed=11)
    same = make_folder(tmp_path / "c" / "pics", per_class=3, test_per_class=1, seed=10)
    ca, cb, cs = (RunConfig(dataset=str(p)) for p in (a, b, same))
    assert ca.dataset.startswith("pics@") and cb.dataset.startswith("pics@")
    assert ca.dataset != cb.dataset and ca.run_id != cb.run_id
    assert cs.dataset == ca.dataset and cs.run_id == ca.run_id  # identity is the content, not the place
    assert RunConfig(dataset=ca.dataset).run_id == ca.run_id  # the stored name finds the same run again
    assert "@" not in ca.run_id  # run ids stay [A-Za-z0-9._-]: file names, URLs
    assert RunConfig(dataset="cifar10").run_id == "resnet20A-cifar10-e20-s0-4c7b6f9cf6"  # built-ins unchanged
    with pytest.raises(StudyError, match="write --dataset ./pics"):
        cwd = os.getcwd()
        os.chdir(tmp_path / "a")
        try:
            RunConfig(dataset="pics")
        finally:
            os.chdir(cwd)
    with pytest.raises(RetryLater):
        RunConfig(dataset=str(tmp_path / "missing"))


def test_edited_folder_trains_a_new_run(tmp_path):
    """Removing one image makes the same command train a new run (another data set name); the first run stays."""
    folder = make_folder(tmp_path / "my-images", per_class=10, test_per_class=3)
    results = tmp_path / "results"
    args = [*TRAIN, "--epochs", "1", "--dataset", folder, "--results-dir", results]
    env = cli_env(**{settings.CACHE.name: str(tmp_path / "cache")})
    run_cli(*args, env=env)
    next(iter(sorted((folder / "train" / "red").iterdir()))).unlink()
    run_cli(*args, env=env)
    rows = query(results, "SELECT dataset, train_size, status FROM runs ORDER BY train_size")
    assert [r["train_size"] for r in rows] == [29, 30] and all(r["status"] == "completed" for r in rows)
    assert rows[0]["dataset"] != rows[1]["dataset"]


def test_bench_data_times_the_decode_and_the_cached_second_run(tmp_path, monkeypatch):
    """`bench data`'s figures come from a real decode and a real cached load, in a cache it removes afterwards."""
    from resnet_study.jobs.bench.data import bench_data

    monkeypatch.setenv(settings.CACHE.name, str(tmp_path / "cache"))
    folder = make_folder(tmp_path / "pics", per_class=8, test_per_class=2)
    res = bench_data(folder)
    assert res["images"] == 30 and res["classes"] == 3 and res["dataset"].startswith("pics@")
    assert res["decode_images_per_second"] > 0 and res["second_run_cached_load_seconds"] < res["decode_seconds"]
    assert res["cache_bytes"] > 30 * 3 * 32 * 32
    assert not (tmp_path / "cache").exists()  # its own temporary cache, not the user's
