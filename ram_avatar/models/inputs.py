"""The avatar's input maps, built from a pose, a body template, a camera and keypoints.

One function for training and for driving, so that both feed the networks exactly the same
kind of maps. The ``maps`` dict (all tensors on the template's device, batch B, frame H x W):

    uv               (B, H, W, 2)   texture coordinates of the posed body, v up; 0 on background
    mask             (B, H, W)      bool, body coverage
    uv_expanded      (B, h, w, 2)   the same for the body pushed out along its normals, rendered
    mask_expanded    (B, h, w)      directly at the attention size (h, w) = (H, W) / downsample
    uv_previous      (B, H, W, 2)   the previous frame's body (optional; when driving, pass the
    mask_previous    (B, H, W)      last output's ``features`` as ``previous_features`` instead)
    hand_keypoints   (B, 2, 21, 3)  left / right hand (u, v, confidence), pixels
    face_points      (B, 478, 3)    MediaPipe face landmarks (u, v, depth); all 0 = no face
"""

from __future__ import annotations

import torch

from ram_avatar.body.layout import SmplxPose
from ram_avatar.body.template import BodyTemplate
from ram_avatar.models.dual_attention import attention_size
from ram_avatar.models.face_map import FACE_LANDMARKS
from ram_avatar.models.hand_map import HAND_KEYPOINTS
from ram_avatar.render import Camera, interpolate, rasterize


def uv_maps(
    vertices: torch.Tensor, template: BodyTemplate, camera: Camera, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed vertices (B, V, 3) -> uv (B, H, W, 2) and mask (B, H, W) at ``size`` (H, W)."""
    fragments = rasterize(vertices, template.faces, camera, size)
    return interpolate(fragments, template.uv_faces, template.uvs), fragments.mask


def template_hand_keypoints(
    template: BodyTemplate, joints: torch.Tensor, vertices: torch.Tensor, camera: Camera
) -> torch.Tensor:
    """(B, 2, 21, 3) MediaPipe-layout hand keypoints (u, v, confidence) of the posed template.

    Joints and fingertip vertices come from the tracker's keypoint map; points the template
    lacks (e.g. fingertips on a mesh without known landmarks) and points behind the camera get
    confidence 0.
    """
    from ram_avatar.tracking.keypoint_map import keypoint_map

    table = keypoint_map(template)
    points = table.points(joints, vertices)  # (B, 55 + M, 3)
    index = torch.stack([table.left_hand_index, table.right_hand_index])  # (2, 21)
    points = points[:, index.flatten()]
    if camera.batch_size != points.shape[0]:  # one camera shared by the batch
        B = points.shape[0]
        camera = Camera(camera.K.expand(B, 3, 3), camera.R.expand(B, 3, 3), camera.t.expand(B, 3), camera.image_size)
    pixels, depth = camera.project(points)
    confidence = table.hand_weight.repeat(2) * (depth > 0)
    return torch.cat([pixels, confidence[..., None].to(pixels.dtype)], -1).view(-1, 2, HAND_KEYPOINTS, 3)


def face_points_from_keypoints(face: torch.Tensor, face_mesh: torch.Tensor | None = None) -> torch.Tensor:
    """Subject-format face keypoints -> the face map's (B, 478, 3) (u, v, depth).

    Args:
        face: (B, 478, 3) 2D landmarks (x, y, confidence) in frame pixels (``keypoints.npz``).
        face_mesh: optional (B, 478, 3) 3D landmarks in the camera frame (metres): their z is
            the depth; without it every detected landmark gets depth 1.
    Returns:
        (B, 478, 3); rows of undetected faces (confidence 0) are all 0, which draws nothing.
    """
    if face.dim() != 3 or face.shape[1:] != (FACE_LANDMARKS, 3):
        raise ValueError(
            f"face keypoints must be (B, {FACE_LANDMARKS}, 3) as (x, y, confidence); got {tuple(face.shape)}"
        )
    detected = face[..., 2] > 0
    depth = torch.ones_like(face[..., 2]) if face_mesh is None else face_mesh[..., 2].clamp_min(1e-3)
    return torch.cat([face[..., :2], depth[..., None]], -1) * detected[..., None]


def prepare_inputs(
    template: BodyTemplate,
    pose: SmplxPose,
    camera: Camera,
    *,
    shape: torch.Tensor | None = None,
    expression: torch.Tensor | None = None,
    hand_keypoints: torch.Tensor | None = None,
    face_points: torch.Tensor | None = None,
    previous_pose: SmplxPose | None = None,
    previous_camera: Camera | None = None,
    previous_expression: torch.Tensor | None = None,
    expand_distance: float = 0.03,
    attention_downsample: int = 4,
    expanded: bool = True,
    offsets: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Build the avatar's ``maps`` for a batch of B frames (see the module docstring).

    Args:
        template, pose, shape, expression: the body (pose batch B; shape / expression (B or 1, .)).
        camera: B cameras or 1; its ``image_size`` is the frame size (H, W).
        hand_keypoints: (B, 2, 21, 3) detected hands; default: the posed template's hand joints
            projected (what a driving motion provides).
        face_points: (B, 478, 3) (u, v, depth), e.g. from ``face_points_from_keypoints``;
            default: no face (zeros).
        previous_pose / previous_camera / previous_expression: frame t-1 (training); default:
            no ``uv_previous`` (the model then uses ``previous_features`` or the current frame).
        expand_distance: metres the expanded body is pushed out along its normals.
        attention_downsample: frame size / attention map size.
        expanded: render the expanded body (only spatial attention needs it).
        offsets: (V,) the subject's surface offsets (``BodyTemplate.forward``); None: none.
    """
    size = camera.image_size
    with torch.no_grad():  # the maps are inputs: nothing upstream of them is trained
        body = template(pose, shape, expression, offsets)
        uv, mask = uv_maps(body.vertices, template, camera, size)
        maps = {"uv": uv, "mask": mask}
        if expanded:
            small = attention_size(*size, attention_downsample)
            maps["uv_expanded"], maps["mask_expanded"] = uv_maps(
                body.expanded(expand_distance), template, camera.resize(small), small
            )
        if previous_pose is not None:
            previous = template(previous_pose, shape, previous_expression, offsets)
            maps["uv_previous"], maps["mask_previous"] = uv_maps(
                previous.vertices, template, previous_camera or camera, size
            )
        if hand_keypoints is None:
            hand_keypoints = template_hand_keypoints(template, body.joints, body.vertices, camera)
        maps["hand_keypoints"] = hand_keypoints.to(uv)
        B = uv.shape[0]
        maps["face_points"] = uv.new_zeros(B, FACE_LANDMARKS, 3) if face_points is None else face_points.to(uv)
    return maps
