"""Rasterizer, camera and soft silhouette: synthetic meshes with analytic answers."""

from __future__ import annotations

import importlib.util
import itertools

import pytest
import torch

from ram_avatar.render import Camera, interpolate, intrinsics, rasterize, render_maps, soft_silhouette
from ram_avatar.render import rasterizer as rasterizer_module

# A unit cube, triangles counter-clockwise seen from outside.
CUBE_VERTICES = torch.tensor(list(itertools.product((-0.5, 0.5), repeat=3)))  # index = 4x + 2y + z
CUBE_FACES = torch.tensor(
    [
        [0, 1, 3],
        [0, 3, 2],
        [4, 6, 7],
        [4, 7, 5],  # x = -0.5, x = +0.5
        [0, 4, 5],
        [0, 5, 1],
        [2, 3, 7],
        [2, 7, 6],  # y = -0.5, y = +0.5
        [0, 2, 6],
        [0, 6, 4],
        [1, 5, 7],
        [1, 7, 3],  # z = -0.5, z = +0.5
    ]
)
CUBE_EYE = torch.tensor([[1.7, 1.3, 2.4]])


def screen_camera(size: tuple[int, int] = (48, 64), focal: float = 64.0) -> Camera:
    """Identity pose (world = camera frame), principal point at the image centre."""
    return Camera(intrinsics(focal, size), torch.eye(3)[None], torch.zeros(1, 3), size)


def at_pixels(camera: Camera, pixels: list[tuple[float, float]], depth: float = 2.0) -> torch.Tensor:
    """World points (1, N, 3) that project exactly to ``pixels`` at camera depth ``depth``."""
    points = torch.tensor(pixels, dtype=torch.float32)[None]
    return camera.unproject(points, torch.full(points.shape[:2], depth))


def pixel_centres(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) x and y of every pixel centre, float64."""
    rows, columns = (torch.arange(n, dtype=torch.float64) for n in size)
    i, j = torch.meshgrid(rows, columns, indexing="ij")
    return j + 0.5, i + 0.5


def edge_values(corners: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) float64 edge functions of the triangle ``corners`` (3, 2) at every pixel
    centre, signed so that > 0 is inside."""
    x, y = pixel_centres(size)
    c = corners.double()
    values = []
    for k in range(3):
        (xs, ys), (xe, ye) = c[(k + 1) % 3], c[(k + 2) % 3]
        values.append((xe - xs) * (y - ys) - (ye - ys) * (x - xs))
    values = torch.stack(values)
    area = (c[1, 0] - c[0, 0]) * (c[2, 1] - c[0, 1]) - (c[1, 1] - c[0, 1]) * (c[2, 0] - c[0, 0])
    return values * area.sign()


@pytest.fixture(autouse=True, params=["compiled", "vectorised"])
def zbuffer(request, monkeypatch):
    """Every test runs on both z-buffers: the CPU's compiled loop and the GPU's vectorised form."""
    monkeypatch.setattr(rasterizer_module, "COMPILED_CPU_ZBUFFER", request.param == "compiled")
    return request.param


def cube_camera(size: tuple[int, int] = (64, 64), eye: torch.Tensor = CUBE_EYE) -> Camera:
    return Camera.look_at(eye, torch.zeros_like(eye), focal=90.0, image_size=size)


# ---------------------------------------------------------------------------------- coverage


@pytest.mark.parametrize("order", [[0, 1, 2], [0, 2, 1]])
def test_triangle_coverage_follows_top_left_rule(order):
    camera = screen_camera()
    # Horizontal top edge and vertical left edge through rows / columns of pixel centres, and a
    # hypotenuse x + y = 33 through more centres.
    vertices = at_pixels(camera, [(4.5, 4.5), (28.5, 4.5), (4.5, 28.5)])
    fragments = rasterize(vertices, torch.tensor([order]), camera)
    x, y = pixel_centres(camera.image_size)
    # Top and left edges own the centres on them; the bottom-right hypotenuse does not.
    expected = (x >= 4.5) & (y >= 4.5) & (x + y < 33)
    assert torch.equal(fragments.mask[0], expected)
    assert torch.equal(fragments.face_ids[0], torch.where(expected, 0, -1))


def test_backface_culling_drops_clockwise_triangles():
    camera = screen_camera()
    vertices = at_pixels(camera, [(4.5, 4.5), (28.5, 4.5), (4.5, 28.5)])
    # Seen counter-clockwise on screen (y down) = facing the camera.
    front = rasterize(vertices, torch.tensor([[0, 2, 1]]), camera, cull_backfaces=True)
    back = rasterize(vertices, torch.tensor([[0, 1, 2]]), camera, cull_backfaces=True)
    assert front.mask.sum() == 300 and not back.mask.any()


def test_generic_triangle_coverage_is_pixel_exact():
    eye = torch.tensor([[0.3, -0.2, 2.5]])
    camera = Camera.look_at(eye, torch.zeros(1, 3), focal=70.0, image_size=(40, 56))
    vertices = torch.tensor([[[-0.61, -0.43, 0.2], [0.72, -0.18, -0.35], [-0.05, 0.66, 0.41]]])
    fragments = rasterize(vertices, torch.tensor([[0, 1, 2]]), camera)
    pixels, _ = camera.to(dtype=torch.float64).project(vertices.double())
    values = edge_values(pixels[0], camera.image_size)
    # Decide every centre farther than 1e-3 px from an edge (the vertices snap to 1/256 px).
    lengths = torch.stack([(pixels[0, (k + 2) % 3] - pixels[0, (k + 1) % 3]).norm() for k in range(3)])
    distance = values / lengths[:, None, None]
    clear = (distance.abs() > 1e-3).all(0)
    inside = (distance > 0).all(0)
    assert clear.float().mean() > 0.99 and inside.sum() > 300
    assert torch.equal(fragments.mask[0][clear], inside[clear])


def test_shared_edges_are_covered_exactly_once():
    """A triangulated grid whose inner vertices and edges sit on pixel centres: every centre of
    the rectangle belongs to exactly one triangle, and none outside."""
    camera = screen_camera((40, 40))
    generator = torch.Generator().manual_seed(0)
    xs = torch.tensor([3.2, 11.5, 20.5, 27.5, 36.7])
    ys = torch.tensor([2.8, 10.5, 19.5, 28.5, 37.3])
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (5, 5, 2) as (x, y)
    jitter = torch.randint(-4, 5, (3, 3, 2), generator=generator) * 0.5  # keep centres on centres
    grid[1:4, 1:4] += jitter
    vertices = at_pixels(camera, grid.reshape(-1, 2).tolist())
    faces = []
    for r, c in itertools.product(range(4), range(4)):
        a, b, d, e = 5 * r + c, 5 * r + c + 1, 5 * (r + 1) + c, 5 * (r + 1) + c + 1
        faces += [[a, b, e], [a, e, d]] if (r + c) % 2 else [[a, b, d], [b, e, d]]
    faces = torch.tensor(faces)
    count = sum(rasterize(vertices, faces[f : f + 1], camera).mask[0].long() for f in range(len(faces)))
    x, y = pixel_centres(camera.image_size)
    rectangle = (x > 3.2) & (x < 36.7) & (y > 2.8) & (y < 37.3)
    assert torch.equal(count, rectangle.long())
    assert torch.equal(rasterize(vertices, faces, camera).mask[0], rectangle)


def test_closed_cube_has_no_holes_and_nearest_face_wins():
    camera = cube_camera()
    fragments = rasterize(CUBE_VERTICES[None], CUBE_FACES, camera)
    # The silhouette of a convex body is the convex hull of its projected corners.
    pixels, _ = camera.to(dtype=torch.float64).project(CUBE_VERTICES[None].double())
    x, y = pixel_centres(camera.image_size)
    inside, clear = torch.ones_like(x, dtype=torch.bool), torch.ones_like(x, dtype=torch.bool)
    p = pixels[0]
    for i, j in itertools.combinations(range(8), 2):
        d = p[j] - p[i]
        side = d[0] * (p[:, 1] - p[i, 1]) - d[1] * (p[:, 0] - p[i, 0])
        if (side > -1e-9).all() or (side < 1e-9).all():  # a hull edge: keep the points' side
            sign = 1 if (side > -1e-9).all() else -1
            value = sign * (d[0] * (y - p[i, 1]) - d[1] * (x - p[i, 0])) / d.norm()
            inside &= value > 0
            clear &= value.abs() > 1e-3
    assert torch.equal(fragments.mask[0][clear], inside[clear])

    # Depth: the nearest of the ray's intersections with the six face squares.
    centres = torch.stack([x, y], -1).view(1, -1, 2)
    origin = camera.center.double()[0]
    unit_depth = torch.ones(1, centres.shape[1], dtype=torch.float64)
    direction = camera.to(dtype=torch.float64).unproject(centres, unit_depth)[0] - origin
    hits = []
    for axis, offset in itertools.product(range(3), (-0.5, 0.5)):
        t = (offset - origin[axis]) / direction[:, axis]
        point = origin + t[:, None] * direction
        on_square = (point.abs() <= 0.5 + 1e-9).all(-1)
        hits.append(torch.where(on_square & (t > 0), t, torch.inf))
    nearest_t = torch.stack(hits).min(0).values.view(camera.image_size)  # camera z = t here
    # (up to the effect of snapping the corners to 1/256 px)
    assert torch.allclose(fragments.depth[0][clear & inside], nearest_t[clear & inside].float(), atol=1e-3)
    # ... and the winning faces face the camera.
    corners = CUBE_VERTICES[CUBE_FACES]  # (12, 3, 3)
    normals = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    facing = (normals * (CUBE_EYE - corners.mean(1))).sum(-1) > 0
    assert facing[fragments.face_ids[0][fragments.mask[0]]].all()


def test_chunked_splatting_matches_single_pass(monkeypatch, zbuffer):
    if zbuffer == "compiled":
        pytest.skip("chunking is the vectorised z-buffer's")
    camera = cube_camera((96, 80))
    whole = rasterize(CUBE_VERTICES[None], CUBE_FACES, camera)
    monkeypatch.setattr(rasterizer_module, "MAX_CANDIDATES", 100)
    chunked = rasterize(CUBE_VERTICES[None], CUBE_FACES, camera)
    assert torch.equal(whole.face_ids, chunked.face_ids)
    assert torch.equal(whole.bary, chunked.bary)


def test_compiled_and_vectorised_zbuffers_agree_exactly(zbuffer):
    if zbuffer == "vectorised":
        pytest.skip("compares both paths itself")
    # A soup of overlapping triangles at many depths, a batch of two, edges crossing the border.
    generator = torch.Generator().manual_seed(0)
    camera = screen_camera((61, 77))
    pixels = torch.rand(2, 400, 3, 2, generator=generator) * torch.tensor([95.0, 80.0]) - 9
    sizes = torch.rand(2, 400, 1, 1, generator=generator) * 0.3
    pixels = pixels[:, :, :1] + (pixels - pixels[:, :, :1]) * sizes  # mostly small triangles
    depth = 1 + 3 * torch.rand(2, 400, 3, generator=generator)
    points = camera.unproject(pixels.reshape(2, -1, 2), depth.reshape(2, -1))
    faces = torch.arange(1200).view(400, 3)
    cameras = Camera(*(x.expand(2, *x.shape[1:]) for x in (camera.K, camera.R, camera.t)), camera.image_size)
    for cull in (False, True):
        compiled = rasterize(points, faces, cameras, cull_backfaces=cull)
        rasterizer_module.COMPILED_CPU_ZBUFFER = False
        vectorised = rasterize(points, faces, cameras, cull_backfaces=cull)
        rasterizer_module.COMPILED_CPU_ZBUFFER = True
        assert compiled.mask.any() and (~compiled.mask).any()
        assert torch.equal(compiled.face_ids, vectorised.face_ids)
        assert torch.equal(compiled.bary, vectorised.bary)


def test_background_and_behind_camera():
    camera = screen_camera()
    in_front = at_pixels(camera, [(10.0, 10.0), (50.0, 12.0), (20.0, 40.0)], depth=2.0)
    behind = in_front * torch.tensor([1.0, 1.0, -1.0])
    straddling = torch.cat([in_front[:, :2], behind[:, 2:]], 1)
    for vertices in (behind, straddling):
        fragments = rasterize(vertices, torch.tensor([[0, 1, 2]]), camera)
        assert not fragments.mask.any() and (fragments.face_ids == -1).all()
    fragments = rasterize(in_front, torch.tensor([[0, 1, 2]]), camera)
    background = ~fragments.mask
    assert background.any() and fragments.mask.any()
    assert (fragments.face_ids[background] == -1).all()
    assert (fragments.bary[background] == 0).all() and (fragments.depth[background] == 0).all()


# ------------------------------------------------------------------------- barycentrics & maps


def test_barycentrics_are_perspective_correct():
    eye = torch.tensor([[0.8, 0.5, 1.6]])
    camera = Camera.look_at(eye, torch.zeros(1, 3), focal=60.0, image_size=(40, 48))
    vertices = torch.tensor([[[-0.6, -0.5, 0.3], [0.7, -0.2, -0.6], [-0.1, 0.7, 0.2]]])
    faces = torch.tensor([[0, 1, 2]])
    fragments = rasterize(vertices, faces, camera)
    mask = fragments.mask
    assert mask.sum() > 200
    assert torch.allclose(fragments.bary[mask].sum(-1), torch.ones(()), atol=1e-6)
    assert (fragments.bary[mask] >= 0).all() and (fragments.bary[~mask] == 0).all()
    # The interpolated 3-D point lies on the pixel centre's ray, at the reported depth.
    points = interpolate(fragments, faces, vertices[0])[mask]  # (P, 3)
    pixels, depth = camera.project(points[None])
    x, y = pixel_centres(camera.image_size)
    centres = torch.stack([x, y], -1)[mask[0]].float()
    assert (pixels[0] - centres).abs().max() < 3e-3  # corners snap to 1/256 px
    assert torch.allclose(depth[0], fragments.depth[mask], rtol=1e-5)


def test_uv_interpolation_through_a_corner_table_is_linear():
    camera = screen_camera()
    # A quad from (8, 8) to (56, 40), parallel to the image plane: UVs are affine on screen.
    vertices = at_pixels(camera, [(8.0, 8.0), (56.0, 8.0), (56.0, 40.0), (8.0, 40.0)], depth=3.0)
    faces = torch.tensor([[0, 3, 2], [0, 2, 1]])
    # UVs with v up, one row per face corner (as at a seam): the corner table differs from faces.
    uvs = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    uv_faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    fragments = rasterize(vertices, faces, camera)
    uv = interpolate(fragments, uv_faces, uvs)[0]
    x, y = pixel_centres(camera.image_size)
    expected = torch.stack([(x - 8) / 48, 1 - (y - 8) / 32], -1).float()
    mask = fragments.mask[0]
    assert mask.sum() == 48 * 32
    assert torch.allclose(uv[mask], expected[mask], atol=1e-5)
    assert (uv[~mask] == 0).all()


def test_interpolate_per_item_attributes_and_gradients():
    camera = cube_camera()
    vertices = CUBE_VERTICES[None].repeat(2, 1, 1).requires_grad_(True)
    fragments = rasterize(vertices, CUBE_FACES, camera)
    colours = torch.rand(2, 8, 3)
    per_item = interpolate(fragments, CUBE_FACES, colours)
    for b in range(2):
        assert torch.allclose(per_item[b], interpolate(fragments, CUBE_FACES, colours[b])[b])
    # Gradients reach the vertices through the barycentrics and the depth.
    (per_item.sum() + fragments.depth.sum()).backward()
    assert torch.isfinite(vertices.grad).all() and vertices.grad.abs().sum() > 0


def test_render_maps():
    camera = cube_camera((32, 40))
    uvs, uv_faces = torch.rand(36, 2), torch.arange(36).view(12, 3)
    canonical = CUBE_VERTICES * 2
    maps = render_maps(CUBE_VERTICES[None], CUBE_FACES, uvs, uv_faces, canonical, camera)
    assert maps["uv"].shape == (1, 32, 40, 2) and maps["canonical"].shape == (1, 32, 40, 3)
    mask = maps["mask"]
    fragments = rasterize(CUBE_VERTICES[None], CUBE_FACES, camera)
    assert torch.equal(mask, fragments.mask) and torch.equal(maps["face_ids"], fragments.face_ids)
    assert torch.equal(maps["canonical"], interpolate(fragments, CUBE_FACES, canonical))
    assert ((maps["uv"][mask] >= 0) & (maps["uv"][mask] <= 1)).all() and (maps["uv"][~mask] == 0).all()
    # Canonical codes of covered pixels lie on the cube's surface (a face of the [-1, 1] cube).
    assert torch.allclose(maps["canonical"][mask].abs().amax(-1), torch.ones(()), atol=1e-5)


# ------------------------------------------------------------------------------------ batches


def test_batch_items_use_their_own_camera_and_vertices():
    eyes = torch.tensor([[1.7, 1.3, 2.4], [-2.0, 0.4, 1.5]])
    cameras = cube_camera(eye=eyes)
    vertices = torch.stack([CUBE_VERTICES, CUBE_VERTICES * 0.8 + 0.1])
    batched = rasterize(vertices, CUBE_FACES, cameras)
    for b in range(2):
        single = rasterize(vertices[b : b + 1], CUBE_FACES, cameras[b])
        assert torch.equal(batched.face_ids[b], single.face_ids[0])
        assert torch.allclose(batched.bary[b], single.bary[0])
        assert torch.allclose(batched.depth[b], single.depth[0])
    assert not torch.equal(batched.mask[0], batched.mask[1])
    # One camera is shared by the batch.
    shared = rasterize(vertices, CUBE_FACES, cameras[0])
    assert torch.equal(shared.face_ids[0], batched.face_ids[0])
    assert torch.equal(shared.face_ids[1], rasterize(vertices[1:], CUBE_FACES, cameras[0]).face_ids[0])


# ------------------------------------------------------------------------------------- camera


def test_project_unproject_round_trip_and_look_at():
    eyes = torch.tensor([[0.5, 1.2, 3.0], [-2.0, 0.3, -1.0]])
    camera = Camera.look_at(eyes, torch.tensor([[0.0, 1.0, 0.0]] * 2), focal=500.0, image_size=(480, 640))
    camera.K[:, 0, 1] = 3.0  # some skew
    points = torch.rand(2, 50, 3) - 0.5
    pixels, depth = camera.project(points)
    assert torch.allclose(camera.unproject(pixels, depth), points, atol=1e-5)
    # The target is at the principal point, world up is image up, and R is a rotation.
    target_pixels, _ = camera.project(torch.tensor([[[0.0, 1.0, 0.0]], [[0.0, 1.0, 0.0]]]))
    assert torch.allclose(target_pixels[:, 0], torch.tensor([320.0, 240.0]), atol=1e-3)
    above, _ = camera.project(torch.tensor([[[0.0, 1.1, 0.0]], [[0.0, 1.1, 0.0]]]))
    assert (above[:, 0, 1] < 240).all()
    assert torch.allclose(camera.R @ camera.R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(camera.center, eyes, atol=1e-5)


def test_front_view_puts_the_body_left_on_the_image_right():
    eye, target = torch.tensor([[0.0, 1.0, 3.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    camera = Camera.look_at(eye, target, focal=500.0, image_size=(512, 512))
    left_hand, _ = camera.project(torch.tensor([[[0.7, 1.0, 0.0]]]))  # the body's left is +X
    assert left_hand[0, 0, 0] > 256


def test_framing_fits_the_mesh_tightly():
    vertices = (CUBE_VERTICES * torch.tensor([0.6, 1.7, 0.3]) + torch.tensor([0.2, 0.9, -0.1]))[None]
    camera = Camera.framing(vertices, (256, 192), margin=0.1)
    pixels, depth = camera.project(vertices)
    assert (depth > 0).all() and torch.allclose(camera.R, torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None])
    offsets = ((pixels - torch.tensor([96.0, 128.0])) / torch.tensor([96.0, 128.0])).abs()
    assert offsets.max() == pytest.approx(0.9, abs=1e-4)


def test_crop_resize_maps_pixels_and_renders_the_crop():
    camera = cube_camera((96, 128))
    box = torch.tensor([[20.0, 8.0, 84.0, 72.0]])  # u0, v0, u1, v1: a 64 x 64 crop
    points = torch.rand(1, 20, 3) - 0.5
    full, _ = camera.project(points)
    for size, scale in (((64, 64), 1.0), ((32, 32), 0.5), ((128, 96), torch.tensor([1.5, 2.0]))):
        cropped, _ = camera.crop_resize(box, size).project(points)
        assert torch.allclose(cropped, (full - box[:, None, :2]) * scale, atol=1e-4)
    # Rendering an integer-aligned crop gives exactly that window of the full render.
    crop = rasterize(CUBE_VERTICES[None], CUBE_FACES, camera.crop_resize(box, (64, 64)))
    window = rasterize(CUBE_VERTICES[None], CUBE_FACES, camera).face_ids[:, 8:72, 20:84]
    assert torch.equal(crop.face_ids, window)
    assert torch.allclose(camera.resize((48, 64)).K, camera.K * torch.tensor([[0.5], [0.5], [1.0]]))


# -------------------------------------------------------------------------- soft silhouette


def square(centre: torch.Tensor, half: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """A square in the plane z = 0 (facing +z), (1, 4, 3), and its 2 faces."""
    corners = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]]) * half
    return (corners + centre)[None], torch.tensor([[0, 1, 2], [0, 2, 3]])


def front_camera() -> Camera:
    """Looks at the origin from z = 2; one world unit is 30 pixels there."""
    return Camera.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=60.0, image_size=(64, 64))


def test_soft_silhouette_matches_the_mask_and_has_gradients():
    camera = front_camera()
    vertices, faces = square(torch.tensor([0.05, -0.02, 0.0]))
    vertices.requires_grad_(True)
    soft = soft_silhouette(vertices, faces, camera, sigma=1.0)
    hard = rasterize(vertices, faces, camera).mask
    assert soft.shape == (1, 64, 64) and (soft >= 0).all() and (soft <= 1).all()
    assert torch.equal(soft > 0.5, hard)
    mask = hard.float()[None]
    outline = torch.nn.functional.max_pool2d(mask, 3, 1, 1) + torch.nn.functional.max_pool2d(-mask, 3, 1, 1)
    far = torch.nn.functional.max_pool2d(outline, 9, 1, 4)[0] == 0  # > 4 px from the outline
    assert torch.equal(soft[far], hard[far].float())
    soft.sum().backward()
    assert torch.isfinite(vertices.grad).all() and vertices.grad[..., :2].abs().sum() > 0
    # Batch items are independent; a square partly off-screen is fine.
    batch = torch.cat([vertices.detach(), vertices.detach() + torch.tensor([0.9, 0.5, 0.0])])
    batched = soft_silhouette(batch, faces, camera, sigma=1.0)
    assert torch.equal(batched[0], soft[0].detach())
    assert torch.equal(batched[1], soft_silhouette(batch[1:], faces, camera, sigma=1.0)[0])


def test_soft_silhouette_fitting_recovers_a_translation():
    camera = front_camera()
    vertices, faces = square(torch.zeros(3))
    target = rasterize(vertices + torch.tensor([0.08, -0.06, 0.0]), faces, camera).mask.float()

    def iou(offset: torch.Tensor) -> float:
        mask = rasterize(vertices + offset, faces, camera).mask.float()
        return float((mask * target).sum() / (mask + target).clamp(max=1).sum())

    offset = torch.zeros(3, requires_grad=True)
    optimiser = torch.optim.Adam([offset], lr=0.01)
    start = iou(offset.detach())
    for _ in range(40):
        optimiser.zero_grad()
        loss = ((soft_silhouette(vertices + offset, faces, camera, sigma=1.0) - target) ** 2).mean()
        loss.backward()
        optimiser.step()
    assert start < 0.75 and 1 - iou(offset.detach()) < (1 - start) / 4
    # The target mask pins the offset down to about half a pixel (1 px = 1/30 here).
    assert torch.allclose(offset.detach()[:2], torch.tensor([0.08, -0.06]), atol=0.02)


# --------------------------------------------------------------------------------- pytorch3d


HAS_PYTORCH3D = importlib.util.find_spec("pytorch3d") is not None


@pytest.mark.skipif(not HAS_PYTORCH3D, reason="pytorch3d is not installed (no CPU wheel)")
def test_matches_pytorch3d():
    # A UV sphere: 40 segments x 20 rings, poles left open.
    phi, theta = torch.meshgrid(torch.linspace(0, 2 * torch.pi, 41)[:-1], torch.linspace(0.05, 3.09, 20), indexing="ij")
    points = torch.stack([theta.sin() * phi.cos(), theta.cos(), theta.sin() * phi.sin()], -1).reshape(-1, 3)
    grid = torch.arange(40 * 20).view(40, 20)
    right, down = grid.roll(-1, 0), grid.roll(-1, 1)
    quads = torch.stack([grid, right, right.roll(-1, 1), down], -1)[:, :-1].reshape(-1, 4)
    faces = torch.cat([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    vertices = torch.stack([points, points * 0.7 + 0.2])
    cameras = cube_camera((96, 128), eye=torch.tensor([[1.7, 1.3, 2.4], [-2.0, 0.4, 1.5]]))
    ours = rasterize(vertices, faces, cameras)
    theirs = rasterize(vertices, faces, cameras, backend="pytorch3d")
    assert (ours.face_ids == theirs.face_ids).float().mean() >= 0.999
    # Ours are computed from corners snapped to 1/256 px, theirs from exact ones.
    same = ours.mask & (ours.face_ids == theirs.face_ids)
    assert torch.allclose(ours.bary[same], theirs.bary[same], atol=5e-3)
    assert torch.allclose(ours.depth[same], theirs.depth[same], atol=1e-3)


@pytest.mark.skipif(HAS_PYTORCH3D, reason="pytorch3d is installed")
def test_pytorch3d_backend_reports_a_missing_install():
    with pytest.raises(ImportError, match="backend='torch'"):
        rasterize(CUBE_VERTICES[None], CUBE_FACES, cube_camera(), backend="pytorch3d")


def test_compiled_surface_without_gradients_equals_the_differentiable_one(zbuffer):
    if zbuffer == "vectorised":
        pytest.skip("the compiled z-buffer's own barycentrics")
    camera = cube_camera((70, 90))
    vertices = (CUBE_VERTICES[None] * torch.tensor([1.0, 1.3, 0.8])).requires_grad_()
    differentiable = rasterize(vertices, CUBE_FACES, camera)  # grad wanted: PyTorch barycentrics
    assert differentiable.bary.requires_grad
    with torch.no_grad():
        compiled = rasterize(vertices, CUBE_FACES, camera)  # the compiled loop's
    assert compiled.mask.sum() > 1000
    for name in ("face_ids", "mask", "bary", "depth"):
        assert torch.equal(getattr(compiled, name), getattr(differentiable, name).detach()), name
