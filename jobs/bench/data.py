"""`resnet-study bench data PATH`: what the user's own data set costs before training starts.

Two starts of a run, as two runs of `train --dataset PATH` would make them, in a fresh cache folder:
1. the first: scan the folder and fingerprint its files (every byte hashed), decode every image by the stated rule
   (core.datasets.RESIZE_RULE) and write the decoded arrays to the cache;
2. the second: scan and fingerprint again (that is how an edited folder is noticed), then read the cached arrays.
Printed: images, the decode rate (images/s of step 1's decoding alone), each step's seconds, the cache's size.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from ...core import datasets, settings, userdata


def bench_data(path: Path) -> dict:
    saved = os.environ.get(settings.CACHE.name)
    with tempfile.TemporaryDirectory(prefix="resnet-study-bench-data-") as cache:
        os.environ[settings.CACHE.name] = cache
        try:
            t0 = time.perf_counter()
            spec = datasets.user_dataset(path)
            t1 = time.perf_counter()
            arrays, _ = userdata.load_user(spec, None)
            t2 = time.perf_counter()
            again = datasets.user_dataset(path)  # a new process would resolve the path again
            t3 = time.perf_counter()
            cached, _ = userdata.load_user(again, None)
            t4 = time.perf_counter()
            size = (userdata.cache_dir() / f"{spec.name}.npz").stat().st_size
        finally:
            if saved is None:
                os.environ.pop(settings.CACHE.name, None)
            else:
                os.environ[settings.CACHE.name] = saved
    images = len(arrays["y_train"]) + len(arrays["y_test"])
    assert (cached["x_train"] == arrays["x_train"]).all()  # the cache gives back what was decoded
    return {"dataset": spec.name, "images": images, "classes": len(arrays["classes"]),
            "fingerprint_seconds": t1 - t0, "decode_seconds": t2 - t1, "decode_images_per_second": images / (t2 - t1),
            "second_run_fingerprint_seconds": t3 - t2, "second_run_cached_load_seconds": t4 - t3,
            "second_run_seconds": t4 - t2, "cache_bytes": size}


def report(res: dict) -> str:
    return "\n".join([
        f"{res['dataset']}: {res['images']} images, {res['classes']} classes",
        f"first run:  fingerprint {res['fingerprint_seconds']:.2f} s, decode {res['decode_seconds']:.2f} s "
        f"({res['decode_images_per_second']:.0f} img/s, cache written: {res['cache_bytes'] / 1e6:.1f} MB)",
        f"second run: fingerprint {res['second_run_fingerprint_seconds']:.2f} s + cached load "
        f"{res['second_run_cached_load_seconds']:.3f} s = {res['second_run_seconds']:.2f} s",
        f"command: {res['command']}",
    ])
