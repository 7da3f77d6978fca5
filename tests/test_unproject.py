"""Unprojection: the colours of frames of a textured body come back onto its atlas."""

from __future__ import annotations

import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.render import Camera, interpolate, rasterize
from ram_avatar.training.unproject import push_pull, splat, unproject_colours

SIZE, ATLAS = 96, 64


def texture(uv: torch.Tensor) -> torch.Tensor:
    """A smooth known colour per texture coordinate: (..., 2) -> (..., 3) in [0, 1]."""
    u, v = uv.unbind(-1)
    return torch.stack([u, v, 0.5 + 0.4 * torch.sin(6 * u) * torch.cos(5 * v)], -1)


def test_unprojection_recovers_the_texture_of_a_textured_body(anny_template):
    # The template turning on the spot, three views, rendered with the known texture.
    pose = SmplxPose.zeros(3)
    pose.global_orient[:, 1] = torch.tensor([0.0, 1.2, -1.2])
    pose.transl[:, 2] = -2.5
    with torch.no_grad():
        body = anny_template(pose)
    camera = Camera.look_at(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]]), focal=100.0, image_size=(SIZE, SIZE))
    fragments = rasterize(body.vertices, anny_template.faces, camera, (SIZE, SIZE))
    uv = interpolate(fragments, anny_template.uv_faces, anny_template.uvs)
    images = texture(uv) * fragments.mask[..., None]
    masks = fragments.mask.float()

    colour, coverage = unproject_colours(anny_template, pose, camera, images, masks, ATLAS, batch_size=2)
    assert colour.shape == (3, ATLAS, ATLAS) and torch.isfinite(colour).all()
    assert 0 <= colour.min() and colour.max() <= 1
    centres = (torch.arange(ATLAS) + 0.5) / ATLAS
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    expected = texture(torch.stack([cols, 1 - rows], -1)).permute(2, 0, 1)  # row 0 is v = 1
    seen = coverage > 0
    assert seen.float().mean() > 0.1  # a good part of the atlas was seen
    error = (colour - expected).abs().amax(0)[seen]
    # A pixel lands in the texel its uv falls in: up to half a texel off its centre (the texture
    # changes by < 0.05 a texel), and texels on the UV islands' borders mix in their neighbours.
    assert error.median() < 0.02 and (error < 0.1).float().mean() > 0.95


def test_grazing_views_count_less_than_head_on_ones():
    """Two pixels land on one texel: the head-on colour dominates the average."""
    uv = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    colour = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    sums, weights = splat(uv, colour, torch.tensor([1.0, 0.1]), 4)
    texel = sums[:, 2, 2] / weights[2, 2]  # u = 0.5 -> column 2, v = 0.5 -> row (1 - v) * 4 = 2
    assert weights[2, 2] == weights.sum() and texel[0] > 0.9 and texel[2] < 0.1


def test_push_pull_fills_holes_from_their_surroundings():
    sums, weights = torch.zeros(3, 8, 8), torch.zeros(8, 8)
    sums[:, :, :4], weights[:, :4] = 0.2, 1.0  # left half seen, grey 0.2
    sums[:, :, 4:5], weights[:, 4:5] = 0.8, 1.0  # one column seen, 0.8
    filled = push_pull(sums, weights)
    torch.testing.assert_close(filled[:, :, :4], torch.full((3, 8, 4), 0.2))  # seen texels keep their colour
    assert torch.isfinite(filled).all() and (filled[:, :, 5:] >= 0.2).all() and (filled[:, :, 5:] <= 0.8).all()
