"""`resnet-study bench train`: the real CLI in real processes, small step counts (figures: docs/benchmarks.md)."""

import json
import math
import re

import pytest
import torch

from resnet_study.core import EXIT_RETRY
from resnet_study.core.train import resolve_precision
from tests.helpers import run_cli

pytestmark = pytest.mark.slow  # real training processes

SMALL = ["--device", "cpu", "--n", "1", "--steps", "2", "--warmup", "1", "--rounds", "1", "--eval-images", "1000",
         "--workers", "1"]


def test_prints_three_throughputs_and_ratios_and_saves_json(tmp_path, fashion_mnist_available):
    saved = tmp_path / "bench.json"
    out = run_cli("bench", "train", "--dataset", "fashion-mnist", "--augment", "paper,report", "--save", saved,
                  *SMALL).stdout
    names = ("a", "b:paper", "c:paper", "b:report", "c:report")
    rates = {m.group(1): float(m.group(2)) for m in re.finditer(r"^\(([a-z:]+)\) .*? (\d+\.\d) ", out, re.M)}
    assert tuple(rates) == names, out
    ratios = dict(re.findall(r"(b:paper/a|b:paper/c:paper) (\d+\.\d\d)", out))
    assert float(ratios["b:paper/a"]) == pytest.approx(rates["b:paper"] / rates["a"], abs=0.011)
    assert float(ratios["b:paper/c:paper"]) == pytest.approx(rates["b:paper"] / rates["c:paper"], abs=0.011)
    assert "report_cost_over_paper" in out
    assert re.search(r"^evaluation: \d+ img/s \(1000 images, batch 1000\)$", out, re.M)
    assert "ResNet-8 (n=1" in out and "fashion-mnist [real]" in out and "load average" in out
    assert re.search(r"peak RSS of this process over the whole benchmark: \d+ MB", out)

    res = json.loads(saved.read_text())  # the same run, for tracking
    pipes = res["pipelines"]
    assert tuple(pipes) == names
    for name, p in pipes.items():
        assert p["images_per_second"] == pytest.approx(rates[name], abs=0.051)
        assert len(p["rounds"]) == 1 and math.isfinite(p["images_per_second"])
        assert p["epoch_seconds_50k"] == pytest.approx(50_000 / p["images_per_second"])
        assert p["seconds_per_step"] == pytest.approx(128 / p["images_per_second"])
        assert 100 < p["peak_rss_mb"] < 8000 and p["peak_gpu_mb"] is None
    rate = {k: v["images_per_second"] for k, v in pipes.items()}
    assert res["ratios"]["b:report/c:report"] == pytest.approx(rate["b:report"] / rate["c:report"])
    assert res["ratios"]["report_cost_over_paper"] == pytest.approx(rate["b:paper"] / rate["b:report"] - 1)
    assert pipes["b:report"]["loader_ms_per_batch"] > 0
    assert res["options"]["steps"] == 2 and res["model"] == "ResNet-8" and res["device_type"] == "cpu"
    auto = resolve_precision("auto", torch.device("cpu")).precision  # what `train` would use here
    assert res["precision"] == auto and f"(a) and (b) in {auto}" in out
    assert pipes["a"]["label"].endswith(f", {auto})") and pipes["c:paper"]["label"].endswith(", fp32)")
    assert len(res["load_avg_start"]) == 3 and res["data_source"] == "real"
    assert res["command"].startswith("resnet-study bench train")


def test_cifar10_shaped_images_where_cifar10_is_absent(tmp_path):
    res = json.loads(run_cli("bench", "train", "--dataset", "cifar10", "--data-dir", tmp_path, "--json",
                             *SMALL).stdout)
    assert res["data_source"].startswith("generated")
    assert all(p["images_per_second"] > 0 for p in res["pipelines"].values())


def test_resnet110_at_batch_128_stays_under_4_gb(fashion_mnist_available):
    """The deepest net of the paper, one training step after a warm-up one, then evaluation at its batch of 1 000 (a
    third of the peak): 2 996 MB of the 4 096 allowed (AMD EPYC, 2026-12-03). A step more changes it by 80 MB."""
    res = json.loads(run_cli("bench", "train", "--dataset", "fashion-mnist", "--device", "cpu", "--n", "18",
                             "--no-classic", "--steps", "1", "--warmup", "1", "--rounds", "1", "--eval-images", "1000",
                             "--json").stdout)
    assert res["model"] == "ResNet-110" and list(res["pipelines"]) == ["a", "b:paper"]
    assert res["peak_rss_mb_process"] < 4096, res


def test_cuda(fashion_mnist_available):
    """With a GPU: the CUDA path end to end. Without one: asking for it is a one-line error, not a traceback, with
    the exit code of a condition that may pass (75: a pod on a node without a GPU is retried)."""
    if torch.cuda.is_available():
        res = json.loads(run_cli("bench", "train", "--dataset", "fashion-mnist", *SMALL[2:], "--device", "cuda",
                                 "--json").stdout)
        assert res["device_type"] == "cuda" and all(p["peak_gpu_mb"] > 0 for p in res["pipelines"].values())
    else:
        proc = run_cli("bench", "train", "--device", "cuda", check=False)
        assert proc.returncode == EXIT_RETRY and proc.stderr.count("\n") == 1 and "--device" in proc.stderr, proc.stderr


def test_unknown_preset_is_a_one_line_error():
    proc = run_cli("bench", "train", "--augment", "paper,fancy", check=False)
    assert proc.returncode == 2 and "fancy" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
