"""The avatar networks: shapes, conventions, the attention maths, training signal, Hub round trip."""

from __future__ import annotations

import json

import pytest
import torch

from ram_avatar.models import (
    BaselineUNet,
    DualAttention,
    HandMap,
    NeuralTexture,
    RamAvatar,
    StyleUNet,
    TemporalDiscriminator,
    attention_size,
    criss_cross,
    draw_face_mesh,
    draw_hand_skeleton,
    face_points_from_keypoints,
    get_config,
    triplet,
)
from ram_avatar.models.dual_attention import distance_weight
from ram_avatar.models.layers import ShallowUNet, haar_dwt, haar_idwt, upsample_to

TINY = dict(
    texture_size=16,
    texture_channels=6,
    texture_levels=2,
    attention_hidden=4,
    attention_downsample=4,
    face_code_channels=3,
    map_hidden=4,
    map_channels=3,
    widths=[4, 6, 8],
    style_dim=8,
    decoder_convs=2,
)


def synthetic_maps(B: int = 2, H: int = 23, W: int = 19, downsample: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """Maps as prepare_inputs makes them, without a body template: a blob of random UVs."""
    g = torch.Generator().manual_seed(seed)
    h, w = attention_size(H, W, downsample)

    def body(height: int, width: int, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
        y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
        mask = (x**2 + y**2 < radius**2).expand(B, height, width).clone()
        uv = torch.rand(B, height, width, 2, generator=g) * mask[..., None]
        return uv, mask

    maps = {}
    maps["uv"], maps["mask"] = body(H, W, 0.7)
    maps["uv_expanded"], maps["mask_expanded"] = body(h, w, 0.9)
    maps["uv_previous"], maps["mask_previous"] = body(H, W, 0.6)
    hands = torch.rand(B, 2, 21, 3, generator=g) * torch.tensor([W, H, 1.0])
    maps["hand_keypoints"] = hands
    face = torch.rand(B, 478, 3, generator=g) * torch.tensor([W / 2, H / 2, 0.0]) + torch.tensor([W / 4, H / 4, 1.0])
    maps["face_points"] = face
    return maps


def test_haar_wavelet_is_orthonormal_and_inverts():
    x = torch.randn(2, 3, 6, 10)
    coefficients = haar_dwt(x)
    assert coefficients.shape == (2, 12, 3, 5)
    torch.testing.assert_close(haar_idwt(coefficients), x)
    torch.testing.assert_close(coefficients.square().sum(), x.square().sum())
    # A constant image has only the low band.
    assert haar_dwt(torch.ones(1, 1, 4, 4))[:, 1:].abs().max() == 0


def test_shallow_unet_is_its_convs_over_concatenations():
    """The U-Net's concatenation-free forward equals its layers over the concatenated inputs
    (the structure its weights were trained for), at odd sizes too."""
    torch.manual_seed(0)
    unet = ShallowUNet(5, 4, 3)
    for size in ((24, 32), (13, 10)):
        x = torch.randn(2, 5, *size)
        d1 = unet.down1(x)
        u1 = unet.up1(torch.cat([upsample_to(unet.down2(d1), d1.shape[-2:]), d1], 1))
        expected = unet.out(torch.cat([upsample_to(u1, size), x], 1))
        torch.testing.assert_close(unet(x), expected, atol=1e-5, rtol=1e-5)


def test_neural_texture_samples_texels_v_up_and_zeroes_background():
    texture = NeuralTexture(channels=2, size=4, levels=1)
    with torch.no_grad():
        texture.levels[0].copy_(torch.arange(32.0).view(1, 4, 4, 2))
    # The centre of texel (row r from the top, column c) is u = (c + 0.5) / 4, v = 1 - (r + 0.5) / 4.
    r, c = 1, 2
    uv = torch.tensor([(c + 0.5) / 4, 1 - (r + 0.5) / 4]).expand(1, 3, 5, 2).clone()
    mask = torch.ones(1, 3, 5, dtype=torch.bool)
    mask[0, 0, :] = False
    features = texture(uv, mask)
    assert features.shape == (1, 2, 3, 5)
    torch.testing.assert_close(features[0, :, 1:].amax((1, 2)), texture.levels[0][0, r, c])
    assert features[0, :, 0].abs().max() == 0


def test_neural_texture_pyramid_shapes_and_background_at_odd_size():
    texture = NeuralTexture(channels=5, size=32, levels=3)
    assert [tuple(level.shape) for level in texture.levels] == [(1, 32, 32, 5), (1, 16, 16, 5), (1, 8, 8, 5)]
    maps = synthetic_maps(B=2, H=13, W=11)
    features = texture(maps["uv"], maps["mask"])
    assert features.shape == (2, 5, 13, 11)
    assert features.permute(0, 2, 3, 1)[~maps["mask"]].abs().max() == 0
    assert (features.permute(0, 2, 3, 1)[maps["mask"]].abs().sum(-1) > 0).all()
    with pytest.raises(ValueError, match="uv must be"):
        texture(maps["uv"][..., :1], maps["mask"])


def test_neural_texture_samples_several_maps_in_one_call_like_one_by_one():
    texture = NeuralTexture(channels=4, size=16, levels=2)
    a, b = synthetic_maps(H=9, W=7, seed=3), synthetic_maps(H=5, W=6, seed=4)
    together = texture.sample([(a["uv"], a["mask"]), (b["uv"], b["mask"])])
    torch.testing.assert_close(together[0], texture(a["uv"], a["mask"]))
    torch.testing.assert_close(together[1], texture(b["uv"], b["mask"]))


def test_outputs_are_clamped_with_a_gradient_that_brings_them_back():
    from ram_avatar.models.avatar import to_rgba

    raw = torch.tensor([2.0, -3.0, 0.1, 0.2]).view(1, 4, 1, 1).requires_grad_()
    out = to_rgba(raw)
    assert out["rgb"].flatten().tolist() == pytest.approx([1.0, 0.0, 0.6]) and out["alpha"].item() == pytest.approx(0.7)
    # Losses that want every output higher: the value below 0 gets a gradient (a sigmoid would give
    # ~0), the one above 1 gets none, since following it would push it further out.
    (-(out["rgb"].sum() + out["alpha"].sum())).backward()
    assert raw.grad.flatten().tolist() == [0.0, -1.0, -1.0, -1.0]
    raw.grad = None
    out = to_rgba(raw)
    (out["rgb"].sum() + out["alpha"].sum()).backward()  # ... and lower: the mirror image
    assert raw.grad.flatten().tolist() == [1.0, 0.0, 1.0, 1.0]


def test_spread_edge_carries_colour_and_a_fading_alpha_past_the_outline_only():
    from ram_avatar.models.avatar import colour_base, spread_edge

    mask = torch.zeros(1, 12, 12)
    mask[:, 4:8, 4:8] = 1  # a 4 x 4 body: red on the left half, blue on the right
    colour = torch.zeros(1, 3, 12, 12)
    colour[:, 0, 4:8, 4:6], colour[:, 2, 4:8, 6:8] = 0.3, -0.2
    out, alpha = spread_edge(colour, mask, 2)
    assert torch.equal(out[..., 4:8, 4:8], colour[..., 4:8, 4:8])  # the body keeps its colours ...
    assert torch.equal(alpha[..., 4:8, 4:8], torch.ones(1, 1, 4, 4))  # ... and is opaque
    assert out[0, :, 5, 2].tolist() == pytest.approx([0.3, 0, 0])  # 2 px left of the body: red
    assert out[0, :, 5, 9].tolist() == pytest.approx([0, 0, -0.2])  # 2 px right: blue
    assert out[0, :, 2, 3].tolist() == pytest.approx([0.3, 0, 0])  # above and left: red only
    assert out[0, 0, 2, 6].item() == pytest.approx(0.3 / 2) and out[0, 2, 2, 6].item() == pytest.approx(-0.2 / 2)
    # alpha: the fraction of the 5 x 5 box that is body, fading outwards
    assert alpha[0, 0, 5, 3].item() == pytest.approx(8 / 25) and alpha[0, 0, 5, 2].item() == pytest.approx(4 / 25)
    assert alpha[0, 0, 2, 2].item() == pytest.approx(1 / 25)
    far = torch.ones(12, 12, dtype=torch.bool)
    far[2:10, 2:10] = False
    assert out[..., far].abs().max() == 0 and alpha[..., far].max() == 0  # beyond the reach: nothing
    base = colour_base(colour, mask, 2)
    assert torch.equal(base[:, :3], out) and torch.equal(base[:, 3:], alpha - 0.5)
    assert torch.equal(colour_base(colour, mask)[:, 3], mask - 0.5)  # no spread: the hard template edge


def brute_force_criss_cross(query, key, value, power):
    """Pixel by pixel: softmax over its row and column (itself once) of d(i, u) * <q_i, k_u>."""
    B, _, h, w = query.shape
    out = torch.zeros(B, value.shape[1], h, w, dtype=torch.float64)
    for b in range(B):
        for y in range(h):
            for x in range(w):
                keys = [(y, z) for z in range(w)] + [(z, x) for z in range(h) if z != y]
                logits = torch.stack(
                    [(query[b, :, y, x] @ key[b, :, i, j]) / (1 + (abs(j - x) + abs(i - y)) ** power) for i, j in keys]
                )
                weights = torch.softmax(logits, 0)
                out[b, :, y, x] = sum(a * value[b, :, i, j] for a, (i, j) in zip(weights, keys))
    return out


def test_criss_cross_matches_brute_force_with_distance_weight():
    g = torch.Generator().manual_seed(1)
    query, key = (torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64) for _ in range(2))
    value = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64)
    result = criss_cross(query, key, value, distance_power=0.8)
    torch.testing.assert_close(result, brute_force_criss_cross(query, key, value, 0.8))
    # The distance weight matters: power 0 makes d = 1/2 everywhere, i.e. plain criss-cross
    # attention of 2 * query, and that is a different result.
    assert not torch.allclose(result, criss_cross(query * 2, key, value, distance_power=0.0))


def test_distance_weight_decays_with_distance():
    d = distance_weight(6, 0.8)
    assert d[0, 0] == 1 and torch.all(d[0, 1:] < d[0, :-1]) and torch.allclose(d, d.T)


def test_dual_attention_output_size_and_required_inputs():
    attention = DualAttention(channels=6, hidden=4)
    small = torch.randn(2, 6, 4, 3)
    assert attention(small, small, small, (15, 11)).shape == (2, 6, 15, 11)
    with pytest.raises(ValueError, match="expanded"):
        attention(small, None, small, (15, 11))
    with pytest.raises(ValueError, match="previous"):
        attention(small, small, None, (15, 11))
    with pytest.raises(ValueError):
        DualAttention(channels=6, hidden=4, spatial=False, temporal=False)


def test_style_unet_any_size_and_per_item_styles():
    net = StyleUNet(in_channels=5, out_channels=4, widths=[4, 6, 8], style_dim=8)
    x = torch.randn(2, 5, 37, 29)
    assert net(x).shape == (2, 4, 37, 29)
    latents = torch.randn(2, 8)
    batched = net(x, latents)
    one_by_one = torch.cat([net(x[i : i + 1], latents[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-4)


def test_hand_skeleton_draws_on_the_bone_only():
    keypoints = torch.zeros(1, 2, 21, 3)
    # Left hand, index finger's first bone: keypoint 5 -> 6, horizontal along row 20.
    keypoints[0, 0, 5] = torch.tensor([10.5, 20.5, 1.0])
    keypoints[0, 0, 6] = torch.tensor([30.5, 20.5, 0.5])
    skeleton = draw_hand_skeleton(keypoints, (40, 48), sigma=1.0)
    assert skeleton.shape == (1, 12, 40, 48)
    index = skeleton[0, 1]
    assert index[20, 20] == pytest.approx(0.5)  # on the bone: the weaker end's confidence
    assert index[20, 10] == pytest.approx(0.5) and index[20, 30] == pytest.approx(0.5)
    assert index[21, 20] == pytest.approx(0.5 * torch.exp(torch.tensor(-0.5)).item(), rel=1e-5)
    assert index[26, 20] == 0 and index[20, 36] == 0 and index[14, 5] == 0  # 6 px off, past the ends
    others = torch.cat([skeleton[0, :1], skeleton[0, 2:]])
    assert others.abs().max() == 0  # other fingers, the palm and the right hand: nothing
    # Undetected hands draw nothing; the result is the same at any batch position.
    batch = draw_hand_skeleton(torch.cat([torch.zeros(1, 2, 21, 3), keypoints]), (40, 48), sigma=1.0)
    assert batch[0].abs().max() == 0
    torch.testing.assert_close(batch[1], skeleton[0])


def test_hand_skeleton_canvas_is_a_crop_of_the_frame():
    """Drawing only a crop (the fast path's hand windows) gives the frame's pixels there, exactly,
    for crops that cut through a hand or hold none of it."""
    keypoints = torch.zeros(2, 2, 21, 3)
    generator = torch.Generator().manual_seed(0)
    keypoints[:, 0, :, :2] = torch.tensor([12.0, 20.0]) + 8 * torch.rand(2, 21, 2, generator=generator)
    keypoints[:, 1, :, :2] = torch.tensor([30.0, 5.0]) + 8 * torch.rand(2, 21, 2, generator=generator)
    keypoints[..., 2] = 1.0
    keypoints[1, 1, :, 2] = 0  # the second item's right hand: undetected
    frame = draw_hand_skeleton(keypoints, (40, 48), sigma=1.0)
    for h, w, origins in [
        (16, 16, [[16, 8], [0, 32]]),
        (12, 20, [[0, 28], [28, 0]]),
        (8, 8, [[0, 0], [20, 20]]),
        (40, 48, [[0, 0], [0, 0]]),
    ]:
        crops = draw_hand_skeleton(keypoints, (40, 48), sigma=1.0, canvas=(torch.tensor(origins), (h, w)))
        for crop, item, (y0, x0) in zip(crops, frame, origins):
            assert torch.equal(crop, item[:, y0 : y0 + h, x0 : x0 + w])


def test_hand_map_shape_and_keypoint_layout_check():
    hand = HandMap(hidden=4, out_channels=16)
    assert hand(synthetic_maps(H=21, W=17)["hand_keypoints"], (21, 17)).shape == (2, 16, 21, 17)
    with pytest.raises(ValueError, match="hand keypoints"):
        hand(torch.zeros(2, 21, 3), (21, 17))


def test_face_mesh_drawing_covers_the_face_only():
    from ram_avatar.models.face_map import face_mesh_triangles, flat_face_layout

    triangles = face_mesh_triangles()
    assert triangles.shape[1] == 3 and triangles.min() >= 0 and triangles.max() < 468
    points = torch.zeros(2, 478, 3)
    points[0, :468, :2] = torch.tensor([16.0, 10.0]) + 6 * flat_face_layout()  # a disk of radius 6 at (16, 10)
    points[0, :, 2] = 1.0
    codes = torch.randn(468, 3)
    drawn = draw_face_mesh(points, codes, triangles, (24, 32))
    assert drawn.shape == (2, 4, 24, 32)
    mask = drawn[0, 3]
    v, u = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    distance = ((u - 16) ** 2 + (v - 10) ** 2).sqrt()
    assert mask[distance > 6].sum() == 0 and mask[distance < 5].mean() > 0.9  # the disk, (nearly) no holes
    assert drawn[0, :3, mask > 0].abs().max() <= codes.abs().max()  # interpolated codes
    assert drawn[1].abs().max() == 0  # depth 0: no face detected, nothing drawn


def test_face_points_from_subject_keypoints():
    face = torch.rand(2, 478, 3) + 0.1
    face[1, :, 2] = 0  # frame 1: no face
    mesh = torch.rand(2, 478, 3) + 0.5
    points = face_points_from_keypoints(face, mesh)
    torch.testing.assert_close(points[0, :, :2], face[0, :, :2])
    torch.testing.assert_close(points[0, :, 2], mesh[0, :, 2])
    assert points[1].abs().max() == 0
    assert (face_points_from_keypoints(face)[0, :, 2] == 1).all()


def test_avatar_output_shapes_and_ranges_at_odd_size():
    model = RamAvatar(**TINY)
    out = model(synthetic_maps(B=2, H=23, W=19))
    assert out["rgb"].shape == (2, 3, 23, 19) and out["alpha"].shape == (2, 1, 23, 19)
    assert out["features"].shape == (2, 6, *attention_size(23, 19, 4))
    for key in ("rgb", "alpha"):
        assert out[key].min() >= 0 and out[key].max() <= 1


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    maps = synthetic_maps(B=2, H=23, W=19)
    for model in (RamAvatar(**TINY), BaselineUNet(texture_size=16, texture_channels=6, map_hidden=4, widths=[4, 6])):
        # Two output layers start at zero (the wavelet bands, and behind them the attention
        # term); each blocks the gradient of what lies behind it until a step has moved it, so
        # the third backward pass is the first that must reach everything.
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            optimizer.step()
            optimizer.zero_grad()
            out = model(maps)
            target = torch.rand_like(out["rgb"])
            ((out["rgb"] - target).abs().mean() + out["alpha"].mean()).backward()
        for name, parameter in model.named_parameters():
            assert parameter.grad is not None, f"{type(model).__name__}.{name} gets no gradient"
            assert parameter.grad.abs().sum() > 0, f"{type(model).__name__}.{name} gets a zero gradient"


def test_discriminator_takes_frame_triplets_and_trains():
    discriminator = TemporalDiscriminator(channels=8, layers=2)
    frames = [torch.rand(2, 3, 40, 36) for _ in range(3)]
    logits = discriminator(triplet(*frames))
    assert logits.dim() == 4 and logits.shape[:2] == (2, 1)
    logits.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in discriminator.parameters())
    with pytest.raises(ValueError, match="9"):
        discriminator(torch.cat(frames[:2], 1))


@pytest.mark.parametrize(
    "flag, part, key",
    [
        ("spatial_attention", "spatial", "uv_expanded"),
        ("temporal_attention", "temporal", "uv_previous"),
        ("face_map", "face", "face_points"),
        ("hand_map", "hand", "hand_keypoints"),
    ],
)
def test_ablation_flags_remove_the_part(flag, part, key):
    full, ablated = RamAvatar(**TINY), RamAvatar(**TINY, **{flag: False})
    names = {name for name, _ in ablated.named_parameters()}
    if part in ("face", "hand"):
        assert getattr(ablated, part) is None and not any(n.startswith(f"{part}.") for n in names)
        assert ablated.renderer.stem[0].in_channels == full.renderer.stem[0].in_channels - TINY["map_channels"]
    else:
        assert getattr(ablated.attention, part) is None
        assert not any(n.startswith(f"attention.{part}") for n in names)
    maps = synthetic_maps()
    del maps[key]  # the ablated model does not need that input
    assert ablated(maps)["rgb"].shape == (2, 3, 23, 19)
    both = RamAvatar(**TINY, spatial_attention=False, temporal_attention=False)
    assert both.attention is None


def test_streaming_previous_features_equal_rendering_the_previous_frame():
    model = RamAvatar(**TINY, face_map=False).eval()
    first, second = synthetic_maps(seed=1), synthetic_maps(seed=2)
    with torch.no_grad():
        features = model(first)["features"]
        streamed = model({**second, "previous_features": features})
        rendered = model({**second, "uv_previous": first["uv"], "mask_previous": first["mask"]})
    torch.testing.assert_close(streamed["rgb"], rendered["rgb"])


def test_save_pretrained_round_trip(tmp_path, capsys):
    model = RamAvatar(**TINY, face_map=False).eval()
    model.save_pretrained(tmp_path / "avatar")
    assert {p.name for p in (tmp_path / "avatar").iterdir()} >= {"config.json", "model.safetensors"}
    config = json.loads((tmp_path / "avatar" / "config.json").read_text())
    assert config["widths"] == [4, 6, 8] and config["face_map"] is False
    capsys.readouterr()
    loaded = RamAvatar.from_pretrained(tmp_path / "avatar")
    assert capsys.readouterr() == ("", "")  # a folder loads silently (the stock mixin prints a line)
    maps = synthetic_maps()
    with torch.no_grad():
        expected, actual = model(maps), loaded(maps)
    for key in ("rgb", "alpha", "features"):
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="safetensors"):
        RamAvatar._load_as_pickle(model, "pytorch_model.bin", "cpu", False)
    (tmp_path / "avatar" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        RamAvatar.from_pretrained(tmp_path / "avatar")


def test_named_configs():
    assert get_config("rt-256")["widths"] == [16, 24, 32, 48]
    assert get_config("paper-1024")["texture_size"] == 1024
    with pytest.raises(ValueError, match="rt-256"):
        get_config("tiny")
    model = RamAvatar.from_config_name("rt-256", texture_size=32, hand_map=False)
    assert model.texture.levels[0].shape[1] == 32 and model.hand is None


def test_prepare_inputs_from_a_posed_template(anny_template):
    from ram_avatar.body import SmplxPose
    from ram_avatar.render import Camera

    pose = SmplxPose.zeros(1)
    camera = Camera.framing(anny_template(pose).vertices, image_size=(64, 48))
    model = RamAvatar(**TINY, face_map=False)
    maps = model.prepare_inputs(anny_template, pose, camera, previous_pose=pose)
    assert maps["uv"].shape == (1, 64, 48, 2) and maps["uv_expanded"].shape == (1, 16, 12, 2)
    torch.testing.assert_close(maps["uv_previous"], maps["uv"])
    # The expanded body covers more of the frame than the body.
    assert maps["mask_expanded"].float().mean() > maps["mask"].float().mean()
    # Hand keypoints: the template's hands, projected inside the frame, all confident (Anny has fingertips).
    hands = maps["hand_keypoints"]
    assert hands.shape == (1, 2, 21, 3) and (hands[..., 2] == 1).all()
    assert (hands[..., 0] > 0).all() and (hands[..., 0] < 48).all()
    assert maps["face_points"].abs().max() == 0
    assert model(maps)["rgb"].shape == (1, 3, 64, 48)
