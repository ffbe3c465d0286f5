"""`python bench/make-image-folder.py DIR`: 10 000 images in 10 classes (900 train + 100 test each), PNG and JPEG,
24..96 px a side, modes RGB / RGBA / L / P, random pixels: the folder `resnet-study bench data` was timed on."""
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, rng = Path(sys.argv[1]), np.random.default_rng(0)
for split, per_class in (("train", 900), ("test", 100)):
    for c in range(10):
        (root / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = (int(v) for v in rng.integers(24, 97, 2))
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(("RGB", "RGBA", "L", "P")[i % 4])
            img.save(root / split / f"class{c}" / (f"{i}.jpg" if i % 4 in (0, 2) and i % 3 == 0 else f"{i}.png"))
