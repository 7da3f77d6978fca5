"""Surface offsets: fitted to masks of a thicker body, they thicken the template to match."""

from __future__ import annotations

import numpy as np
import torch
from tracking_fixture import turning_scene

from ram_avatar.render import rasterize
from ram_avatar.tracking.surface import SurfaceConfig, fit_surface_offsets, hand_vertices

SIZE, FRAMES = 96, 6


def scene(template):  # noqa: ANN001, ANN201
    return turning_scene(FRAMES, SIZE, turn=0.8, depth=3.0, focal=70.0)


def masks_of(template, pose, camera, offsets=None) -> np.ndarray:  # noqa: ANN001
    with torch.no_grad():
        body = template(pose, None, None, offsets)
        return rasterize(body.vertices, template.faces, camera).mask.numpy().astype(np.uint8) * 255


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a > 127) & (b > 127)).sum() / ((a > 127) | (b > 127)).sum())


def test_offsets_along_the_normals_thicken_the_posed_body(anny_template):
    pose, _ = scene(anny_template)
    offsets = torch.full((anny_template.num_vertices,), 0.02)
    with torch.no_grad():
        plain, thick = anny_template(pose), anny_template(pose, offsets=offsets)
    moved = (thick.vertices - plain.vertices).norm(dim=-1)
    assert torch.allclose(moved, torch.full_like(moved, 0.02), atol=1e-5)  # 2 cm, along unit normals
    assert torch.equal(thick.joints, plain.joints)  # the skeleton does not move


def test_fitted_offsets_recover_a_thicker_person(anny_template):
    """Masks of the body 3 cm thicker: the fit moves the body's vertices out (not the hands'),
    and the template's silhouettes then match the masks far better."""
    pose, camera = scene(anny_template)
    shape = anny_template.default_shape()[0]
    hands = hand_vertices(anny_template, shape)
    truth = torch.where(hands, 0.0, 0.03)
    masks = masks_of(anny_template, pose, camera, truth)
    config = SurfaceConfig(iters=40, lr=4e-3, batch=FRAMES, size=SIZE)
    offsets = fit_surface_offsets(anny_template, pose, shape, camera, masks, config=config, progress=False)
    assert offsets.shape == (anny_template.num_vertices,) and offsets.dtype == np.float32
    assert np.all(offsets[hands.numpy()] == 0)
    assert np.percentile(offsets[~hands.numpy()], 90) > 0.01  # the outline's vertices move out
    before = np.median([iou(a, b) for a, b in zip(masks_of(anny_template, pose, camera), masks)])
    fitted = masks_of(anny_template, pose, camera, torch.from_numpy(offsets))
    after = np.median([iou(a, b) for a, b in zip(fitted, masks)])
    assert after > before + 0.1, (before, after)  # measured 0.69 -> 0.85 in these 40 steps


def test_hand_vertices_are_past_the_wrists(anny_template):
    hands = hand_vertices(anny_template, anny_template.default_shape()[0])
    share = hands.float().mean().item()
    assert 0.05 < share < 0.3, share  # Anny's fingers are densely meshed
