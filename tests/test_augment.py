"""Batched augmentation (core.augment) and the device loader (core.data.DeviceLoader) on real Fashion-MNIST images.

Every preset is checked two ways: its drawn parameters vary per sample inside ONE batch and have the preset's
distribution across batches, and its output equals an independent per-image torchvision reference built from those
parameters (so the parameters are what was really applied). Evaluation batches are never augmented.
"""

import itertools

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from resnet_study.core import augment, data

pytestmark = pytest.mark.usefixtures("fashion_mnist_available")


@pytest.fixture(scope="module")
def fashion():
    train, test, _ = data.load("fashion-mnist")
    return data.Split(train.images[:4000], train.labels[:4000]), data.Split(test.images[:1500], test.labels[:1500])


def same_image_batch(fashion, k: int = 128) -> torch.Tensor:
    """k copies of one real, left-right asymmetric image: any variety in the output is the augmentation's."""
    train, _ = fashion
    img = next(im for im in train.images if not torch.equal(im, im.flip(-1)))
    return img.expand(k, -1, -1, -1).contiguous()


def paper_reference(x: torch.Tensor, rec: dict) -> torch.Tensor:
    out = []
    for i in range(len(x)):
        dy, dx = (int(v) + augment.PAD for v in rec["offsets"][i])
        img = TF.pad(x[i], augment.PAD)[:, dy : dy + 32, dx : dx + 32]
        out.append(TF.hflip(img) if rec["flipped"][i] else img)
    return torch.stack(out).float() / 255


def report_reference(x: torch.Tensor, rec: dict) -> torch.Tensor:
    """torchvision's RandomRotation(40), RandomHorizontalFlip, ColorJitter(.2, .2, .2), RandomAdjustSharpness(2), each
    image with its own recorded parameters, one image at a time."""
    ops = {augment.BRIGHTNESS: TF.adjust_brightness, augment.CONTRAST: TF.adjust_contrast,
           augment.SATURATION: TF.adjust_saturation}
    out = []
    for i in range(len(x)):
        img = TF.rotate(x[i].float() / 255, float(rec["angles"][i]), interpolation=InterpolationMode.NEAREST, fill=0)
        if rec["flipped"][i]:
            img = TF.hflip(img)
        for op in rec["jitter_order"][i].tolist():
            img = ops[op](img, float(rec["jitter_factors"][i, op]))
        if rec["sharpened"][i]:
            img = TF.adjust_sharpness(img, augment.SHARPNESS_FACTOR)
        out.append(img)
    return torch.stack(out)


# ---------------------------------------------------------------- paper: pad 4, random crop, flip


def test_paper_is_per_sample_within_one_batch(fashion):
    x = same_image_batch(fashion)
    rec: dict = {}
    out = augment.paper(x, torch.Generator().manual_seed(0), record=rec)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(out, paper_reference(x, rec))  # the recorded per-sample parameters are what was applied
    flipped = rec["flipped"]
    assert 0 < int(flipped.sum()) < len(x), "all images flipped or none: one draw for the whole batch"
    offsets = {tuple(o) for o in rec["offsets"].tolist()}
    assert len(offsets) >= 30, f"only {len(offsets)} distinct crop offsets in one batch of 128"
    assert len({o.numpy().tobytes() for o in out}) >= 60  # identical inputs, many different outputs


def test_paper_distribution_across_batches(fashion):
    train, _ = fashion
    g = torch.Generator().manual_seed(1)
    flips, offsets = [], []
    for batch in train.images[:3840].split(128):
        rec: dict = {}
        augment.paper(batch, g, record=rec)
        flips.append(rec["flipped"])
        offsets.append(rec["offsets"])
    flips, offsets = torch.cat(flips), torch.cat(offsets)
    assert abs(flips.float().mean().item() - 0.5) < 0.04  # 3840 draws: 5 standard deviations
    assert offsets.min() == -augment.PAD and offsets.max() == augment.PAD
    counts = torch.bincount((offsets[:, 0] + 4) * 9 + offsets[:, 1] + 4, minlength=81)
    assert (counts > 0).all(), "some crop offset in [-4, 4]^2 never occurs"
    assert counts.min() > 0.4 * len(offsets) / 81  # roughly uniform, not just present


# ---------------------------------------------------------------- report: rotation, flip, colour jitter, sharpness


def test_report_matches_torchvision_per_image_and_is_per_sample(fashion):
    train, _ = fashion
    x = torch.cat([same_image_batch(fashion, 32), train.images[:32]])
    rec: dict = {}
    out = augment.report(x, torch.Generator().manual_seed(2), record=rec)
    ref = report_reference(x, rec)
    assert (out - ref).abs().max() < 1e-4
    same = slice(0, 32)  # identical inputs
    assert len({o.numpy().tobytes() for o in out[same]}) == 32
    angles = rec["angles"]
    assert len(set(angles.tolist())) == len(x) and (angles < 0).any() and (angles > 0).any()
    assert angles.abs().max() <= augment.MAX_ROTATION_DEG
    assert 0 < int(rec["flipped"].sum()) < len(x) and 0 < int(rec["sharpened"].sum()) < len(x)
    factors = rec["jitter_factors"]
    assert ((factors >= 0.8) & (factors <= 1.2)).all() and len(set(factors[:, 0].tolist())) == len(x)
    assert len({tuple(o) for o in rec["jitter_order"].tolist()}) > 1


def test_report_distribution_across_batches(fashion):
    train, _ = fashion
    g = torch.Generator().manual_seed(3)
    recs = []
    for batch in train.images[:2048].split(256):
        rec: dict = {}
        augment.report(batch, g, record=rec)
        recs.append(rec)
    angles = torch.cat([r["angles"] for r in recs])
    assert angles.min() >= -40 and angles.max() <= 40
    assert angles.min() < -38 and angles.max() > 38 and abs(angles.mean().item()) < 2.5  # uniform on [-40, 40]
    for key in ("flipped", "sharpened"):
        assert abs(torch.cat([r[key] for r in recs]).float().mean().item() - 0.5) < 0.05
    orders = {tuple(o) for r in recs for o in r["jitter_order"].tolist()}
    assert orders == set(itertools.permutations(range(3)))


# ---------------------------------------------------------------- the loader: evaluation untouched, epochs complete


def test_evaluation_batches_are_the_exact_normalised_images(fashion):
    _, test = fashion
    mean, std = data.channel_stats(test.images)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    loader = data.DeviceLoader(test, 1000, mean, std, device="cpu", augment="none", generator=g)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [1000, 500] and len(loader) == 2
    x = torch.cat([b[0] for b in batches])
    expected = (test.images.float() / 255 - mean[None, :, None, None]) / std[None, :, None, None]
    assert torch.equal(x, expected) and torch.equal(torch.cat([b[1] for b in batches]), test.labels)
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(g.get_state(), state), "evaluation drew random numbers"


def test_training_epoch_visits_every_image_once_and_replays_from_the_seed(fashion):
    train, _ = fashion
    split = train.head(1000)
    mean, std = data.channel_stats(split.images)
    plain = (split.images.float() / 255 - mean[None, :, None, None]) / std[None, :, None, None]

    def epoch(augment_name, seed):
        loader = data.DeviceLoader(split, 128, mean, std, device="cpu", augment=augment_name, shuffle=True,
                                   generator=torch.Generator().manual_seed(seed))
        return [(x.clone(), y) for x, y in loader]

    shuffled = epoch("none", 0)
    x = torch.cat([b[0] for b in shuffled])
    order = [next(i for i in range(len(plain)) if torch.equal(plain[i], im)) for im in x[:50]]
    assert order != list(range(50))  # shuffled ...
    assert sorted(torch.cat([b[1] for b in shuffled]).tolist()) == sorted(split.labels.tolist())  # ... complete
    a, b = epoch("paper", 5), epoch("paper", 5)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(a, b))  # resumable sequence
    assert not torch.equal(a[0][0], epoch("paper", 6)[0][0])


def test_channel_stats_are_exact(fashion):
    train, _ = fashion
    mean, std = data.channel_stats(train.images)
    ref = train.images.double() / 255
    assert torch.allclose(mean.double(), ref.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), ref.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)
