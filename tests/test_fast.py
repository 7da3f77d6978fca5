"""The fast inference path: folding is exact, the fast avatar matches the eager one."""

from __future__ import annotations

import pytest
import torch

from ram_avatar.body import SmplxPose
from ram_avatar.models import RamAvatar, StyleUNet, flat_face_layout
from ram_avatar.models.fast import FoldedStyleUNet, collapse_pyramid, fold_wavelet, mask_spans, optimize_for_inference
from ram_avatar.models.layers import haar_idwt
from ram_avatar.render import Camera

SIZE = 64
TINY = dict(
    texture_size=32,
    texture_channels=6,
    texture_levels=2,
    attention_hidden=8,
    attention_downsample=4,
    face_code_channels=3,
    map_hidden=4,
    map_channels=3,
    widths=[8, 12, 16],
    style_dim=8,
    decoder_convs=2,
)
# Tolerances: a stated margin over the error measured on these tests (2-core x86 CPU, float32).
EXACT = 4e-6  # folding: float32 rounding only; measured at most 1.0e-6 (a batch of stream frames), 2e-7 elsewhere
COLLAPSED = 0.025  # max |fast - eager| with the pyramid summed into one texture (random texture, see fast.py);
# measured 0.0081 median, 0.0165 worst over 12 random initialisations of the tiny model


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial weights everywhere (fresh modulation biases are all ones, biases zero)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def scene(anny_template):
    pose = SmplxPose.zeros(2)
    pose.body_pose[:, 15, 2] = torch.tensor([-1.2, -0.6])
    pose.body_pose[:, 16, 2] = 1.2
    body = anny_template(pose)
    camera = Camera.framing(body.vertices[:1], image_size=(SIZE, SIZE))
    head, _ = camera.project(body.joints[:1, 15:16])
    face = torch.ones(2, 478, 3)
    face[:, :468, :2] = head[0] + 0.04 * SIZE * flat_face_layout()
    return pose, camera, face


def maps_for(model, template, scene) -> dict:  # noqa: ANN001
    pose, camera, face = scene
    return model.prepare_inputs(template, pose, camera, face_points=face, previous_pose=pose[[1, 0]])


def test_folded_style_unet_equals_the_modulated_one():
    unet = randomized(StyleUNet(10, 4, [8, 12, 16], style_dim=8, decoder_convs=2))
    x = torch.randn(2, 10, 40, 56)  # not a multiple of the pyramid: padded and cropped the same way
    with torch.no_grad():
        torch.testing.assert_close(FoldedStyleUNet(unet)(x), unet(x), atol=EXACT, rtol=0)


def test_wavelet_fold_is_the_inverse_haar_transform():
    weight, bias = torch.randn(4 * 3, 5, dtype=torch.float64), torch.randn(4 * 3, dtype=torch.float64)
    x = torch.randn(1, 5, 6, 7, dtype=torch.float64)
    expected = haar_idwt(torch.einsum("oi,bihw->bohw", weight, x) + bias[:, None, None])
    w, b = fold_wavelet(weight, bias)
    got = torch.nn.functional.pixel_shuffle(torch.einsum("oi,bihw->bohw", w, x) + b[:, None, None], 2)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)


def test_fast_edge_spread_at_the_frame_border_equals_eager(anny_template, scene):
    pose, _, face = scene
    body = anny_template(pose)
    camera = Camera.framing(body.vertices[:1], image_size=(SIZE, SIZE), margin=-0.1)  # feet and hands cut off
    model = randomized(RamAvatar(**TINY, colour_skip=True, edge_spread=3))
    maps = model.prepare_inputs(anny_template, pose, camera, face_points=face, previous_pose=pose[[1, 0]])
    assert maps["mask"][:, [0, -1]].any()  # the body touches the frame's top and bottom
    with torch.no_grad():
        expected, got = model(maps), optimize_for_inference(model, collapse_texture=False)(maps)
    for key in ("rgb", "alpha"):
        torch.testing.assert_close(got[key], expected[key], atol=EXACT, rtol=0)


@pytest.mark.parametrize(
    "switches",
    [
        {},
        {"spatial_attention": False},
        {"temporal_attention": False},
        {"face_map": False, "hand_map": False},
        {"colour_skip": True},
        {"colour_skip": True, "edge_spread": 3},
    ],
)
def test_fast_avatar_without_collapse_equals_eager(anny_template, scene, switches):
    model = randomized(RamAvatar(**TINY, **switches))
    maps = maps_for(model, anny_template, scene)
    fast = optimize_for_inference(model, collapse_texture=False)
    with torch.no_grad():
        eager = model(maps)
        for inputs in (maps, {**maps, "previous_features": eager["features"]}):  # training-style and streaming
            expected, got = model(inputs), fast(inputs)
            for key in ("rgb", "alpha", "features"):
                torch.testing.assert_close(got[key], expected[key], atol=EXACT, rtol=0)
        # features alone (a stream's frame before a chunk), from the body's uv and mask only
        body = {"uv": maps["uv"], "mask": maps["mask"]}
        for net in (model, fast):
            torch.testing.assert_close(net.features(body), eager["features"], atol=EXACT, rtol=0)


def test_collapsed_texture_is_within_tolerance_and_exact_for_smooth_coarse_levels(anny_template, scene):
    model = randomized(RamAvatar(**TINY))
    maps = maps_for(model, anny_template, scene)
    with torch.no_grad():
        expected = model(maps)
        got = optimize_for_inference(model)(maps)
        assert (got["rgb"] - expected["rgb"]).abs().max() < COLLAPSED
        model.texture.levels[1].fill_(0.3)  # a constant coarse level: its bilinear upsampling is exact
        expected, got = model(maps), optimize_for_inference(model)(maps)
    torch.testing.assert_close(got["rgb"], expected["rgb"], atol=EXACT, rtol=0)


def test_compiled_kernels_match_pytorch(anny_template, scene, monkeypatch):
    """The Numba kernels (a CPU's default) give what PyTorch does: the texture lookup as
    ``grid_sample`` + placing, the attention term's upsampling as dense matrix products, the
    RGBA as ``pixel_shuffle`` + upsampling + ``to_rgba``."""
    import ram_avatar.models.fast as fast_module

    model = randomized(RamAvatar(**TINY))
    maps = maps_for(model, anny_template, scene)
    fast = optimize_for_inference(model)
    with torch.no_grad():
        compiled = fast(maps)
        monkeypatch.setattr(fast_module, "COMPILED_CPU", False)
        plain = fast(maps)
    for key in ("rgb", "alpha", "features"):
        torch.testing.assert_close(compiled[key], plain[key], atol=EXACT, rtol=0)


def test_fast_avatar_at_a_frame_size_off_every_multiple(anny_template, scene):
    """Sides that are not multiples of 4 or of the attention cell: U-Nets run whole, the texture
    box is the frame, the encoder pads; still the eager model's output."""
    pose, camera, face = scene
    model = randomized(RamAvatar(**TINY))
    maps = model.prepare_inputs(anny_template, pose, camera.resize((62, 70)), face_points=face)
    with torch.no_grad():
        expected, got = model(maps), optimize_for_inference(model, collapse_texture=False)(maps)
    assert got["rgb"].shape == (2, 3, 62, 70)
    for key in ("rgb", "alpha", "features"):
        torch.testing.assert_close(got[key], expected[key], atol=EXACT, rtol=0)


def test_collapse_sums_the_levels_at_the_finest_size():
    fine, coarse = torch.randn(1, 3, 8, 8), torch.full((1, 3, 4, 4), 2.0)
    torch.testing.assert_close(collapse_pyramid([fine, coarse]), (fine + 2).permute(0, 2, 3, 1))


def test_optimizing_leaves_the_avatar_alone_and_freezes_the_copy():
    model = randomized(RamAvatar(**TINY))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in fast.parameters())
    with pytest.raises(TypeError, match="RamAvatar"):
        optimize_for_inference(StyleUNet(4))


def test_windowed_shallow_unet_equals_the_full_one():
    from ram_avatar.models.fast import WindowedShallowUNet
    from ram_avatar.models.layers import ShallowUNet

    unet = randomized(ShallowUNet(12, 4, 5))
    x = torch.zeros(2, 12, 160, 200)
    x[0, :6, 70:80, 30:41] = torch.rand(6, 10, 11)  # left hand
    x[0, 6:, 150:160, 190:200] = torch.rand(6, 10, 10)  # right hand, at the frame corner
    x[1, 3, 5:9, 100:101] = 1.0  # second item: one thin line
    with torch.no_grad():
        torch.testing.assert_close(WindowedShallowUNet(unet, groups=2)(x), unet(x), atol=EXACT, rtol=0)
        single = WindowedShallowUNet(unet, groups=2)  # one item at a time: the cached background stays clean
        for item in (x[:1], x[1:]):
            torch.testing.assert_close(single(item), unet(item), atol=EXACT, rtol=0)
        odd = x[..., :158, :]  # not a multiple of 4: the plain U-Net
        torch.testing.assert_close(WindowedShallowUNet(unet, groups=2)(odd), unet(odd), atol=EXACT, rtol=0)


def test_a_batch_of_consecutive_frames_renders_as_a_stream(anny_template, scene):
    """``previous_features`` (1, C, h, w) with a batch: the frame before the first, each later
    frame taking its predecessor's features; the same as rendering the frames one by one."""
    model = randomized(RamAvatar(**TINY))
    with torch.no_grad():  # a strong temporal branch, so that using the wrong predecessor shows
        model.attention.temporal.query.weight.mul_(30)
        model.attention.temporal_out.weight.mul_(10)
    maps = {k: v for k, v in maps_for(model, anny_template, scene).items() if not k.endswith("previous")}
    start = 5 * torch.randn(1, *model(maps)["features"].shape[1:])  # far from frame 0's
    for net in (model, optimize_for_inference(model)):
        with torch.no_grad():
            batched = net({**maps, "previous_features": start})
            previous, frames = start, []
            for i in range(len(maps["uv"])):
                out = net({**{k: v[i : i + 1] for k, v in maps.items()}, "previous_features": previous})
                previous = out["features"]
                frames.append(out["rgb"])
            broadcast = net({**maps, "previous_features": start.expand(len(maps["uv"]), -1, -1, -1)})
        torch.testing.assert_close(batched["rgb"], torch.cat(frames), atol=EXACT, rtol=0)
        # the predecessor matters: measured 0.01, 1000x the tolerance above
        assert (broadcast["rgb"][1] - batched["rgb"][1]).abs().max() > 100 * EXACT


def test_mask_spans_are_the_boxes_of_the_true_pixels():
    masks = torch.zeros(3, 7, 9, dtype=torch.bool)
    masks[0, 2, 3] = masks[0, 5, 1] = True  # two pixels: the box spans both
    masks[2] = True  # everything
    assert mask_spans(masks) == [((2, 6), (1, 4)), None, ((0, 7), (0, 9))]
