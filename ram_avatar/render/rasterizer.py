"""A triangle rasterizer (z-buffer, nearest face per pixel) in PyTorch, with a compiled CPU z-buffer.

Conventions: OpenCV cameras and pixel coordinates as in :mod:`ram_avatar.render.camera`; every
pixel is sampled at its centre (j + 0.5, i + 0.5).

How it works (no Python loop over pixels or triangles):

1. Project the vertices once and snap them to a 1/256-pixel grid, as GPUs do. Coverage is then
   decided with integer arithmetic (carried exactly in float64): triangles sharing an edge
   evaluate exactly opposite edge functions, and the top-left rule gives a pixel centre lying on
   a shared edge to exactly one of them, so closed meshes render without holes or double hits.
2. Enumerate the pixel centres in every triangle's bounding box (a body at 256^2 makes ~50k such
   candidates), test them with incremental edge functions, and reduce them into a z-buffer with
   one ``scatter_reduce(amax)`` on int64 keys ``bits(1/z) << 32 | face``: the nearest covering
   surface wins (exact depth ties: the later face). On the CPU the same rules run as a loop over
   the triangles compiled with Numba (:mod:`ram_avatar.render.cpu_zbuffer`), several times
   faster there than the vectorised form, which stays the GPU path.
3. Compute barycentrics for the winning face of each covered pixel only, in floating point from
   the unsnapped projection, so they are differentiable w.r.t. the vertices. (On the CPU, when no
   gradient is wanted, the compiled loop computes the same values with the same float steps.)

Everything is kept in contiguous 1-D tensors: on CPU, strided, broadcast, int64 and ``where``
elementwise ops, row gathers and transposes are several times slower than 1-D float ops and
``index_select``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ram_avatar.render.camera import Camera

SUBPIXEL_BITS = 8  # vertices snap to 1/256 pixel
# Triangles with a corner farther than this (pixels) from the image origin are dropped: it keeps
# every fixed-point product below 2^53, i.e. exact in float64. Only triangles grazing the near
# plane get that far.
GUARD_BAND = 2.0**15
# (triangle, pixel) candidates processed at once, bounding the temporary memory to ~10 MB. A
# triangle whose bounding box alone holds more pixels is still processed in one go.
MAX_CANDIDATES = 1 << 16
_COVERED = 1 << 32  # z-buffer keys of covered pixels are >= this (their depth bits are > 0)
# On the CPU, use the compiled z-buffer loop (tests switch this off to run the GPU's vectorised
# path on the CPU).
COMPILED_CPU_ZBUFFER = True


@dataclass
class Fragments:
    """The nearest surface at each pixel centre.

    Attributes:
        face_ids: (B, H, W) long, index into ``faces``; -1 on background.
        bary: (B, H, W, 3) perspective-correct barycentric weights of the face's three corners:
            non-negative and summing to 1 on covered pixels, 0 on background. Differentiable
            w.r.t. the vertices.
        depth: (B, H, W) camera-space z of the surface (differentiable); 0 on background.
        mask: (B, H, W) bool, ``face_ids >= 0``.
    """

    face_ids: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def rasterize(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    image_size: tuple[int, int] | None = None,
    near: float = 1e-2,
    cull_backfaces: bool = False,
    backend: str = "auto",
) -> Fragments:
    """Rasterize a batch of triangle meshes sharing one topology.

    Args:
        vertices: (B, V, 3) world positions.
        faces: (F, 3) long vertex indices.
        camera: B cameras, or 1 shared by the batch.
        image_size: (H, W); default ``camera.image_size``.
        near: triangles with a corner at camera depth <= near are dropped whole (no clipping),
            as are those reaching beyond ``GUARD_BAND`` pixels (only possible close to ``near``).
        cull_backfaces: drop triangles seen from behind, i.e. clockwise on screen when
            ``faces`` wind counter-clockwise seen from outside (the body templates' convention).
        backend: ``"auto"`` or ``"torch"`` (this rasterizer), or ``"pytorch3d"``.
    Returns:
        Fragments of size (B, H, W).
    """
    H, W = image_size or camera.image_size
    B = vertices.shape[0]
    camera = _batched(camera, B)
    if backend == "pytorch3d":
        from ram_avatar.render.pytorch3d_backend import rasterize_pytorch3d

        return rasterize_pytorch3d(vertices, faces, camera, (H, W), near, cull_backfaces)
    if backend not in ("auto", "torch"):
        raise ValueError(f"Unknown rasterizer backend {backend!r}; choose 'auto', 'torch' or 'pytorch3d'")

    u, v, z = _project(vertices, camera)
    X, Y = _fixed_point(u, v, z, near)
    differentiable = torch.is_grad_enabled() and z.requires_grad
    if X.device.type == "cpu" and COMPILED_CPU_ZBUFFER and not differentiable and z.dtype == torch.float32:
        # Nothing to differentiate: the compiled loop also gives the barycentrics and depth.
        from ram_avatar.render.cpu_zbuffer import zbuffer_cpu

        surface = zbuffer_cpu(X, Y, z, faces, (B, H, W), cull_backfaces, surface=True)
        face_ids, mask, bary, depth = (x.view(B, H, W, -1).squeeze(-1) for x in surface)
        return Fragments(face_ids, bary, depth, mask)
    corners = _corners(faces, B, vertices.shape[1])
    winner = _winners(X, Y, z.detach(), corners, faces, (B, H, W), cull_backfaces)
    return _fragments(winner, (u, X), (v, Y), z, corners, faces.shape[0], (B, H, W))


def _batched(camera: Camera, batch_size: int) -> Camera:
    """``camera`` for every batch item (a single camera is shared)."""
    if camera.batch_size == batch_size:
        return camera
    K, R, t = (x.expand(batch_size, *x.shape[1:]) for x in (camera.K, camera.R, camera.t))
    return Camera(K, R, t, camera.image_size)


def _project(vertices: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened projection of ``vertices`` (B, V, 3): u, v, z (B*V,)."""
    u, v, z = (row.reshape(-1) for row in camera.project_rows(vertices).unbind(1))
    return u, v, z


def _corners(faces: torch.Tensor, B: int, V: int) -> list[torch.Tensor]:
    """The corners 3 x (B*F,) of ``faces`` (F, 3) in each of B items, indexing the flattened B*V vertices."""
    offsets = V * torch.arange(B, device=faces.device)[:, None]
    return [(faces[:, k] + offsets).reshape(-1) for k in range(3)]


def _fixed_point(u: torch.Tensor, v: torch.Tensor, z: torch.Tensor, near: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertex pixels (B*V,) snapped to 1/256 pixel, in units of 1/256 pixel: float32 integers,
    exact below 2^24. A vertex at depth <= near or outside the guard band gets a NaN x: it fails
    every bounding-box test of its faces, which drops them."""
    with torch.no_grad():
        valid = (z > near) & (u.abs() <= GUARD_BAND) & (v.abs() <= GUARD_BAND)
        one = float(1 << SUBPIXEL_BITS)
        nan_if_invalid = valid.float().log_().mul_(0)  # 0 * log(1) = 0, 0 * log(0) = NaN
        return (u.float() * one).round_().add_(nan_if_invalid), (v.float() * one).round_()


def _winners(
    X: torch.Tensor,
    Y: torch.Tensor,
    z: torch.Tensor,
    corners: list[torch.Tensor],
    faces: torch.Tensor,
    shape: tuple[int, int, int],
    cull_backfaces: bool,
) -> torch.Tensor:
    """The nearest triangle at each pixel centre, (B*H*W,) long as b * F + f, -1 where none.

    Arguments as for ``_zbuffer``, and the (F, 3) ``faces`` the corners come from. On the CPU a
    compiled loop over the triangles (:mod:`ram_avatar.render.cpu_zbuffer`, same rules, several
    times faster); elsewhere the vectorised ``_zbuffer``.
    """
    if X.device.type == "cpu" and COMPILED_CPU_ZBUFFER:
        from ram_avatar.render.cpu_zbuffer import zbuffer_cpu  # numba: imported only when used

        return zbuffer_cpu(X, Y, z, faces, shape, cull_backfaces)[0]
    keys, face = _zbuffer(X, Y, z, corners, faces.shape[0], shape, cull_backfaces)
    winner = torch.full_like(keys, -1)
    pix = (keys >= _COVERED).nonzero().squeeze(1)
    return winner.index_copy_(0, pix, face.index_select(0, keys.index_select(0, pix) & 0xFFFFFFFF))


def _zbuffer(
    X: torch.Tensor,
    Y: torch.Tensor,
    z: torch.Tensor,
    corners: list[torch.Tensor],
    num_faces: int,
    shape: tuple[int, int, int],
    cull_backfaces: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The z-buffer of the flattened batch of size ``shape`` (B, H, W).

    Args:
        X, Y: (B*V,) fixed-point vertex pixels from ``_fixed_point``; z: (B*V,) their depth.
        corners: 3 x (B*F,) corner k of each face, indexing the B*V vertices.
    Returns:
        keys: (B*H*W,) int64 ``bits(float32(1/z)) << 32 | c``, where the pixel is covered by
            candidate face c; below ``_COVERED`` where nothing covers it.
        face: (F',) the candidate faces, as ``b * F + f``.
    """
    B, H, W = shape
    one = float(1 << SUBPIXEL_BITS)
    # Pixel centres j0 <= j < j0 + width, i0 <= i < i0 + height inside each bounding box. (The
    # max side is open: by the top-left rule, no triangle covers a centre exactly at its right-
    # or bottom-most point.)
    box = []
    for coordinate, size in ((X, W), (Y, H)):
        c0, c1, c2 = (coordinate.index_select(0, c) for c in corners)
        low = _first_centre(torch.minimum(torch.minimum(c0, c1), c2), one).clamp_(min=0)
        high = _first_centre(torch.maximum(torch.maximum(c0, c1), c2), one).clamp_(max=size)
        box += [low, high.sub_(low)]
    j0, width, i0, height = box
    face = ((width > 0) & (height > 0)).nonzero().squeeze(1)  # (F',) faces that may cover a centre
    corner = [c.index_select(0, face) for c in corners]
    j0, width, i0, height = (w.index_select(0, face).double() for w in box)

    # From here on float64: the products below reach 2^47, still exact.
    X, Y, IZ = ([w.double().index_select(0, c) for c in corner] for w in (X, Y, z.reciprocal()))
    # Twice the signed screen area: < 0 is counter-clockwise on screen (y down), i.e. front-facing.
    area = (X[1] - X[0]).mul_(Y[2] - Y[0]).sub_((Y[1] - Y[0]).mul_(X[2] - X[0]))
    counts = (width * height).mul_((area < 0) if cull_backfaces else (area != 0))
    # Edge k runs from corner k+1 to corner k+2. Scaled by the sign of the area, its edge
    # function a x + b y + c is > 0 on the triangle's side, and the three sum to |area|.
    sign = area.sign()
    inv_area = area.abs_().reciprocal_()
    origin_x, origin_y = j0 * one + one / 2, i0 * one + one / 2  # the box's first pixel centre
    edges, steps_x, steps_y, depth_rows = [], [], [], [0.0, 0.0, 0.0]
    for k in range(3):
        s, e = (k + 1) % 3, (k + 2) % 3
        a = (Y[s] - Y[e]).mul_(sign)
        b = (X[e] - X[s]).mul_(sign)
        at_origin = (X[s] * Y[e]).sub_(X[e] * Y[s]).mul_(sign).addcmul_(a, origin_x).addcmul_(b, origin_y)
        # Top-left rule: a centre exactly on an edge belongs to the triangle for which it is a
        # top edge (horizontal, inside below: a == 0 < b) or a left edge (a > 0). Triangles
        # sharing an edge run it in opposite directions, so exactly one of them owns it. Edge
        # values are integers, so "> 0, or == 0 on a top-left edge" is "value + 1 > 0" there.
        # (|b| < 2^24 under the guard band, so a * 2^25 + b > 0 is that top-left test.)
        edges.append(at_origin + (torch.add(b, a, alpha=2.0**25) > 0))
        steps_x.append(a.mul_(one))
        steps_y.append(b.mul_(one))
        # 1/z is affine on screen: sum_k (edge_k / |area|) / z_k, stepped like the edges.
        corner_weight = IZ[k].mul_(inv_area)
        for i, row in enumerate((at_origin, steps_x[-1], steps_y[-1])):
            depth_rows[i] = torch.addcmul(depth_rows[i], row, corner_weight) if k else row * corner_weight

    start = counts.cumsum(0) - counts
    base = i0.mul_(W).add_(j0)  # flat pixel index of the box's first centre
    if B > 1:  # offset to the item's own image
        base += (face // num_faces).double() * (H * W)
    table = _FaceTable(edges, steps_x, steps_y, depth_rows, width, start, base)

    keys = torch.zeros(B * H * W, dtype=torch.long, device=z.device)
    for first, last in _chunks(counts):
        _splat(table, counts, first, last, keys, W)
    return keys, face


@dataclass
class _FaceTable:
    """Per-candidate-face float64 (F',) rows for ``_splat``: edge functions at the first pixel
    centre of the box (tie rule included) and their steps per pixel in x and y; 1/z at that
    centre and its steps; the box's width, its first candidate's index, its first pixel index."""

    edges: list[torch.Tensor]
    steps_x: list[torch.Tensor]
    steps_y: list[torch.Tensor]
    depth: list[torch.Tensor]
    width: torch.Tensor
    start: torch.Tensor
    base: torch.Tensor


def _splat(table: _FaceTable, counts: torch.Tensor, first: int, last: int, keys: torch.Tensor, W: int) -> None:
    """Test the pixel centres in the boxes of candidate faces ``first:last``, z-test the covered
    ones into ``keys`` (in place)."""
    part = counts[first:last]
    total = int(part.sum())
    if total == 0:
        return
    owner = torch.arange(first, last, device=counts.device).repeat_interleave(part.long(), output_size=total)
    # Per-face rows are expanded to candidates only where used, keeping the working set small.
    gather = lambda row: row.index_select(0, owner)  # noqa: E731
    # This candidate is the local-th pixel centre of its face's box, row-major.
    offset = float(table.start[first])
    local = torch.arange(offset, offset + total, device=owner.device, dtype=torch.float64)
    local -= gather(table.start)
    width = gather(table.width)
    dy = (local / width).floor_()
    dx = local.addcmul_(dy, width, value=-1)
    inside = None
    for e, sx, sy in zip(table.edges, table.steps_x, table.steps_y):
        value = gather(e).addcmul_(gather(sx), dx).addcmul_(gather(sy), dy)
        inside = value if inside is None else torch.minimum(inside, value)
    inside.clamp_(0, 1)  # integer edge values: 1 where all three are > 0, else 0
    # Non-covering candidates get depth bits 0, keeping their keys below _COVERED.
    d0, ddx, ddy = map(gather, table.depth)
    inv_z = d0.addcmul_(ddx, dx).addcmul_(ddy, dy).mul_(inside).float()
    key = (inv_z.view(torch.int32).long() << 32).bitwise_or_(owner)
    pixel = gather(table.base).add_(dx).add_(dy, alpha=W).long()
    keys.scatter_reduce_(0, pixel, key, "amax")


def _chunks(counts: torch.Tensor) -> list[tuple[int, int]]:
    """Split the candidate faces into consecutive runs of about ``MAX_CANDIDATES`` pixels."""
    if int(counts.sum()) <= MAX_CANDIDATES:
        return [(0, len(counts))]
    group = (counts.cumsum(0) - counts).div_(MAX_CANDIDATES).floor_()
    ends = torch.unique_consecutive(group, return_counts=True)[1].cumsum(0).tolist()
    return list(zip([0] + ends[:-1], ends))


def _fragments(
    winner: torch.Tensor,
    u: tuple[torch.Tensor, torch.Tensor],
    v: tuple[torch.Tensor, torch.Tensor],
    z: torch.Tensor,
    corners: list[torch.Tensor],
    num_faces: int,
    shape: tuple[int, int, int],
) -> Fragments:
    """Barycentrics and depth of the winning face at each covered pixel (differentiable).

    ``winner`` (B*H*W,) from ``_winners``; ``u`` and ``v`` are pairs (projected vertex pixels
    (B*V,), their fixed-point snap)."""
    B, H, W = shape
    mask = winner >= 0
    pix = mask.nonzero().squeeze(1)  # (P,) covered pixels, flat over (B, H, W)
    winner = winner.index_select(0, pix)  # (P,) as b * F + f
    corner = [c.index_select(0, winner) for c in corners]
    # Pixel centres (float: int64 division is slow on CPU).
    flat = pix.double()
    row = flat.div(W).floor_()
    centre = (flat.add_(row, alpha=-W).add_(0.5), row.sub_(row.div(H).floor_().mul_(H)).add_(0.5))

    # Screen-space barycentrics: the signed areas of the sub-triangles opposite each corner. They
    # are computed from the snapped corners the coverage test used, exactly in float64, so they
    # are >= 0 and sum to the triangle's (nonzero) area; the gradient flows as if unsnapped.
    one = float(1 << SUBPIXEL_BITS)
    relative = [[], []]  # corners relative to the centre, per axis
    for axis, (position, fixed) in enumerate((u, v)):
        for c in corner:
            exact = position.index_select(0, c).double()
            snapped = fixed.index_select(0, c).double().div_(one)
            relative[axis].append(exact - exact.detach() + snapped - centre[axis])
    ru, rv = relative
    # (Kept as 1-D tensors per corner: reductions over a small last dim are slow on CPU.)
    areas = [ru[(k + 1) % 3] * rv[(k + 2) % 3] - rv[(k + 1) % 3] * ru[(k + 2) % 3] for k in range(3)]
    total = areas[0] + areas[1] + areas[2]
    zs = [z.index_select(0, c) for c in corner]
    # Perspective correction: attributes are affine in 3-D, so weights go as screen weight / z.
    weights = [(a / total).to(z.dtype) / zk for a, zk in zip(areas, zs)]
    total = weights[0] + weights[1] + weights[2]
    bary = [w / total for w in weights]
    surface_depth = bary[0] * zs[0] + bary[1] * zs[1] + bary[2] * zs[2]

    face_ids = torch.full((B * H * W,), -1, dtype=torch.long, device=pix.device)
    face_ids.index_copy_(0, pix, winner % num_faces)
    bary_image = z.new_zeros(B * H * W, 3).index_copy(0, pix, torch.stack(bary, -1))
    return Fragments(
        face_ids=face_ids.view(B, H, W),
        bary=bary_image.view(B, H, W, 3),
        depth=z.new_zeros(B * H * W).index_copy(0, pix, surface_depth).view(B, H, W),
        mask=mask.view(B, H, W),
    )


def _first_centre(coordinate: torch.Tensor, one: float) -> torch.Tensor:
    """Index of the first pixel centre (at ``one * (j + 1/2)``) at or after fixed-point ``coordinate``."""
    return coordinate.mul(1 / one).sub_(0.5).ceil_()


def interpolate(fragments: Fragments, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate corner attributes over the rasterized surface (perspective-correct).

    Args:
        fragments: from ``rasterize``, size (B, H, W).
        faces: (F, 3) long, for each face the rows of ``attributes`` at its three corners. Pass
            the mesh faces for per-vertex attributes, or a corner table for attributes with
            seams: ``interpolate(fragments, template.uv_faces, template.uvs)`` interpolates UVs,
            whose seam vertices have several UVs.
        attributes: (T, C) shared by the batch, or (B, T, C) per batch item.
    Returns:
        (B, H, W, C), zero on background; differentiable w.r.t. ``attributes`` and, through the
        barycentrics, the vertices.
    """
    B, H, W = fragments.face_ids.shape
    if attributes.dim() == 3 and attributes.shape[0] == 1:
        attributes = attributes[0]
    pix = fragments.mask.reshape(-1).nonzero().squeeze(1)  # (P,) covered pixels
    face = fragments.face_ids.reshape(-1).index_select(0, pix)
    bary = fragments.bary.reshape(-1, 3).index_select(0, pix)  # (P, 3)
    table = attributes.reshape(-1, attributes.shape[-1])  # (T, C) or (B*T, C)
    # Index of each covered pixel's batch item's first attribute row (0 when shared).
    first_row = 0 if attributes.dim() == 2 else pix.div(H * W, rounding_mode="floor") * attributes.shape[1]
    rows = [faces[:, k].index_select(0, face) + first_row for k in range(3)]
    values = sum(bary[:, k, None] * table.index_select(0, rows[k]) for k in range(3))
    return values.new_zeros(B * H * W, values.shape[-1]).index_copy(0, pix, values).view(B, H, W, -1)


def render_maps(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    uvs: torch.Tensor,
    uv_faces: torch.Tensor,
    canonical: torch.Tensor,
    camera: Camera,
    image_size: tuple[int, int] | None = None,
    **raster_options,
) -> dict[str, torch.Tensor]:
    """The per-pixel maps the avatar model consumes, for a posed template mesh.

    Args:
        vertices: (B, V, 3) posed world vertices (``BodyOutput.vertices``).
        faces: (F, 3) long; uvs: (T, 2) in [0, 1], v up; uv_faces: (F, 3) long into ``uvs``;
        canonical: (V, 3) rest-pose code in [-1, 1] (the template's attributes of those names).
        camera, image_size, raster_options: as for ``rasterize``.
    Returns:
        ``uv`` (B, H, W, 2) texture coordinates, v up (to sample a texture image whose first row
        is v = 1 with ``grid_sample``, use ``grid = (2u - 1, 1 - 2v)``); ``canonical``
        (B, H, W, 3); ``mask``, ``depth``, ``face_ids``, ``bary`` as in ``Fragments``.
        Every map is zero on background.
    """
    fragments = rasterize(vertices, faces, camera, image_size, **raster_options)
    return {
        "uv": interpolate(fragments, uv_faces, uvs),
        "canonical": interpolate(fragments, faces, canonical),
        "mask": fragments.mask,
        "depth": fragments.depth,
        "face_ids": fragments.face_ids,
        "bary": fragments.bary,
    }


def soft_silhouette(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    image_size: tuple[int, int] | None = None,
    sigma: float = 1.0,
    near: float = 1e-2,
) -> torch.Tensor:
    """A differentiable silhouette, for fitting a mesh to a person mask.

    ``sigmoid(d / sigma)``, d being the signed distance in pixels from the pixel centre to the
    silhouette outline (> 0 inside). The outline is made of the mesh's contour edges (between a
    front- and a back-facing triangle, or on an open border) that have an uncovered side, and
    the sign comes from the hard mask. To stay cheap d is evaluated only in a band of
    ``ceil(3 sigma)`` pixels around the hard silhouette; elsewhere the result is the hard mask
    (1 inside, 0 outside), which it would differ from by < sigmoid(-3).

    Args:
        vertices: (B, V, 3) world positions; faces: (F, 3) long, consistently wound;
            camera, image_size, near: as for ``rasterize``.
        sigma: edge softness in pixels.
    Returns:
        (B, H, W) in [0, 1], differentiable w.r.t. ``vertices``.
    """
    H, W = image_size or camera.image_size
    B = vertices.shape[0]
    u, v, z = _project(vertices, _batched(camera, B))
    corners = _corners(faces, B, vertices.shape[1])
    radius = max(1, math.ceil(3 * sigma))
    with torch.no_grad():
        X, Y = _fixed_point(u, v, z, near)
        hard = (_winners(X, Y, z.detach(), corners, faces, (B, H, W), False) >= 0).view(B, H, W)
        start, end = _outline(u, v, z, corners, faces, hard, near)  # (E,) vertex indices
        # The band: pixels with both covered and uncovered pixels within the radius.
        mask = hard.to(u.dtype)[:, None]
        pool = lambda x: torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)  # noqa: E731
        band = (pool(mask) + pool(-mask)).view(B, H, W) > 0
        # (pixel, edge) pairs: band pixels near each outline edge, candidates for its nearest.
        su, sv, eu, ev = (w.index_select(0, i) for i in (start, end) for w in (u, v))
        low, high = (torch.minimum(su, eu), torch.minimum(sv, ev)), (torch.maximum(su, eu), torch.maximum(sv, ev))
        pixel, edge = _band_pairs(low, high, start // vertices.shape[1], band, radius)

    # Distance from each pair's pixel centre (the origin below) to its edge, with gradients.
    start, end = start.index_select(0, edge), end.index_select(0, edge)
    row = pixel.div(W, rounding_mode="floor")
    su = u.index_select(0, start) - ((pixel - row * W).to(u.dtype) + 0.5)
    sv = v.index_select(0, start) - ((row % H).to(u.dtype) + 0.5)
    du = u.index_select(0, end) - u.index_select(0, start)
    dv = v.index_select(0, end) - v.index_select(0, start)
    t = (-(su * du + sv * dv) / (du * du + dv * dv).clamp(min=1e-12)).clamp(0, 1)  # closest point
    distance = ((su + t * du) ** 2 + (sv + t * dv) ** 2 + 1e-12).sqrt()
    # Nearest edge per pixel; +inf (no edge near) leaves the hard mask, as sigmoid(+-inf).
    nearest = torch.full((B * H * W,), math.inf, dtype=u.dtype, device=u.device)
    nearest = nearest.scatter_reduce(0, pixel, distance, "amin")
    return torch.sigmoid(nearest.view(B, H, W) * (hard.to(u.dtype) * 2 - 1) / sigma)


def _outline(
    u: torch.Tensor,
    v: torch.Tensor,
    z: torch.Tensor,
    corners: list[torch.Tensor],
    faces: torch.Tensor,
    hard: torch.Tensor,
    near: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Silhouette outline edges of each batch item, as (E,) start and end vertex indices into
    the flattened B*V vertices: contour edges (one adjacent face front-facing, another back-
    facing, or a border edge) with the hard mask ``hard`` (B, H, W) empty on at least one side."""
    B, H, W = hard.shape
    V, F = u.shape[0] // B, faces.shape[0]
    cu, cv, cz = ([w.index_select(0, c) for c in corners] for w in (u, v, z))
    area = (cu[1] - cu[0]) * (cv[2] - cv[0]) - (cv[1] - cv[0]) * (cu[2] - cu[0])
    valid = (cz[0] > near) & (cz[1] > near) & (cz[2] > near)
    # Undirected edges of the topology, and the face of each of the 3F half-edges.
    low = torch.cat([torch.minimum(faces[:, k], faces[:, (k + 1) % 3]) for k in range(3)])
    high = torch.cat([torch.maximum(faces[:, k], faces[:, (k + 1) % 3]) for k in range(3)])
    key, edge_of = torch.unique(low * V + high, return_inverse=True)  # (E,), (3F,)
    half_face = torch.arange(F, device=faces.device).repeat(3)

    def count(face_mask: torch.Tensor) -> torch.Tensor:  # (B, E) adjacent faces in face_mask
        per_half_edge = face_mask.view(B, F).to(u.dtype).index_select(1, half_face)
        return torch.zeros(B, len(key), dtype=u.dtype, device=u.device).index_add_(1, edge_of, per_half_edge)

    front, back, borders = count(valid & (area < 0)), count(valid & (area > 0)), torch.bincount(edge_of) == 1
    item, edge = (((front > 0) & (back > 0)) | (borders & (front + back > 0))).nonzero(as_tuple=True)
    ends = key.index_select(0, edge)
    start, end = ends.div(V, rounding_mode="floor") + item * V, ends % V + item * V
    # Sample the hard mask 1.5 pixels to either side of each edge's midpoint: contour edges
    # inside the silhouette (e.g. an arm in front of the torso) have both sides covered.
    du = u.index_select(0, end) - u.index_select(0, start)
    dv = v.index_select(0, end) - v.index_select(0, start)
    scale = 1.5 / (du * du + dv * dv).sqrt().clamp(min=1e-9)
    mid_u = (u.index_select(0, start) + u.index_select(0, end)) / 2
    mid_v = (v.index_select(0, start) + v.index_select(0, end)) / 2
    covered = [_sample(hard, item, mid_u + side * dv * scale, mid_v - side * du * scale) for side in (-1.0, 1.0)]
    keep = (~(covered[0] & covered[1])).nonzero().squeeze(1)
    return start.index_select(0, keep), end.index_select(0, keep)


def _sample(mask: torch.Tensor, item: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mask`` (B, H, W) at the pixels holding points (x, y) of items ``item``; False outside."""
    B, H, W = mask.shape
    j, i = x.floor().long(), y.floor().long()
    inside = (j >= 0) & (j < W) & (i >= 0) & (i < H)
    flat = (item * H + i.clamp(0, H - 1)) * W + j.clamp(0, W - 1)
    return mask.view(-1).index_select(0, flat) & inside


def _band_pairs(
    low: tuple[torch.Tensor, torch.Tensor],
    high: tuple[torch.Tensor, torch.Tensor],
    item: torch.Tensor,
    band: torch.Tensor,
    radius: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (pixel, box) of the pixels of ``band`` (B, H, W) whose centre lies within ``radius``
    pixels of a box ``low <= (u, v) <= high`` of batch item ``item`` (all (N,) tensors).
    Returns flat pixel indices into B*H*W and box indices, (P,) each."""
    B, H, W = band.shape
    j0, i0 = ((x - 0.5 - radius).ceil_().clamp_(min=0).long() for x in low)
    j1 = (high[0] - 0.5 + radius).floor_().clamp_(max=W - 1).long()
    i1 = (high[1] - 0.5 + radius).floor_().clamp_(max=H - 1).long()
    width, height = (j1 - j0 + 1).clamp_(min=0), (i1 - i0 + 1).clamp_(min=0)
    # Band pixels inside each box from an integral image, to skip the boxes missing the band
    # (lookups clamped to the image: boxes outside it are empty anyway).
    integral = torch.nn.functional.pad(band.to(torch.int32).cumsum(1).cumsum(2), (1, 0, 1, 0)).view(-1)

    def at(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return integral.index_select(0, (item * (H + 1) + i.clamp(0, H)) * (W + 1) + j.clamp(0, W))

    hits = at(i1 + 1, j1 + 1) - at(i0, j1 + 1) - at(i1 + 1, j0) + at(i0, j0)
    box = ((width > 0) & (height > 0) & (hits > 0)).nonzero().squeeze(1)
    width, height, j0, i0, item = (w.index_select(0, box) for w in (width, height, j0, i0, item))
    counts = width * height
    owner = torch.repeat_interleave(counts)  # (pairs,) index into ``box``
    local = torch.arange(len(owner), device=band.device) - (counts.cumsum(0) - counts).index_select(0, owner)
    row_width = width.index_select(0, owner)
    dy = local.div(row_width, rounding_mode="floor")
    first = (item * H + i0) * W + j0
    pixel = first.index_select(0, owner) + dy * W + (local - dy * row_width)
    keep = band.view(-1).index_select(0, pixel).nonzero().squeeze(1)
    return pixel.index_select(0, keep), box.index_select(0, owner.index_select(0, keep))
