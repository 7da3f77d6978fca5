"""The default body template: NAVER's Anny (PyPI ``anny``), driven by SMPL-X-layout poses.

Anny does the shape, the skinning and the facial actions; this file only maps poses.

How a SMPL-X pose becomes an Anny pose
--------------------------------------
* Frames. Anny's world is +Z up with the body facing -Y; SMPL-X's is +Y up facing +Z. ``A``
  (below) turns SMPL-X coordinates into Anny ones; outputs are turned back, so callers only
  ever see the SMPL-X frame.
* Bones. Every one of Anny's 104 bones follows one SMPL-X joint (``BONE_TO_JOINT``): the
  two-bone thigh, shin, upper arm and forearm chains follow the hip / knee / shoulder / elbow,
  the 5-bone spine is split over pelvis / spine1-3 by height, the metacarpals follow the wrist,
  ``finger1`` is the thumb, ``finger2..5`` index .. pinky. Anny has no jaw bone: the jaw pose
  drives the ``jawOpen`` / ``jawLeft`` / ``jawRight`` facial actions instead, calibrated on the
  mesh at start-up (``jawOpen = 1`` is a ~23.5 degree rotation about a hinge we locate).
* Rest poses. SMPL-X's zero pose is a T-pose with flat hands, palms down; Anny's rest is an
  A-pose with relaxed hands. For every bone we compute once, at start-up, the world rotation
  ``T[b]`` that carries Anny's rest bone into SMPL-X's T-pose: arm and finger bones are swung
  to point straight out (+-X), leg bones straight down, and the hand is also rolled so the
  palm faces down (pinky -> index along +Z); the other bones keep their rest direction. A
  SMPL-X pose with global joint rotations ``G_j`` then gives every Anny bone the world-aligned
  rotation ``V_b = A G_j(b) A^T T[b]`` from its rest pose, and Anny's ``local-ref`` pose
  parameters (rotations in world-aligned axes relative to the parent, exactly the SMPL-X
  convention) are ``D_b = V_parent(b)^T V_b``.
* ``T`` is computed on the default phenotype; for other shapes the rest bone directions differ
  by at most ~3 degrees (measured over extreme phenotypes), which stays in the T-pose.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import roma
import torch

from ram_avatar.body import geometry
from ram_avatar.body.layout import JOINT_NAMES, PARENTS, SmplxPose
from ram_avatar.body.template import BodyTemplate

# SMPL-X world -> Anny world: x stays (the body's left), SMPL-X up (+Y) is Anny's +Z, SMPL-X
# forward (+Z) is Anny's -Y.  v_anny = A @ v_smplx.
A = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

_FINGERS = {"thumb": "finger1", "index": "finger2", "middle": "finger3", "ring": "finger4", "pinky": "finger5"}


def _bone_to_joint() -> dict[str, str]:
    """Anny bone -> the SMPL-X joint whose rotation it follows (documented in the module)."""
    table = {
        "root": "pelvis",
        "spine05": "pelvis",  # head at the pelvis centre
        "spine04": "spine1",  # heads at 7, 14, 21, 35 cm above the pelvis
        "spine03": "spine2",
        "spine02": "spine3",
        "spine01": "spine3",
        "neck01": "neck",
        "neck02": "neck",
        "neck03": "neck",
        "head": "head",
        "eye.L": "left_eye",
        "eye.R": "right_eye",
    }
    for side, s in (("left", "L"), ("right", "R")):
        table |= {
            f"pelvis.{s}": "pelvis",
            f"upperleg01.{s}": f"{side}_hip",
            f"upperleg02.{s}": f"{side}_hip",
            f"lowerleg01.{s}": f"{side}_knee",
            f"lowerleg02.{s}": f"{side}_knee",
            f"foot.{s}": f"{side}_ankle",
            f"clavicle.{s}": f"{side}_collar",
            f"shoulder01.{s}": f"{side}_collar",
            f"upperarm01.{s}": f"{side}_shoulder",
            f"upperarm02.{s}": f"{side}_shoulder",
            f"lowerarm01.{s}": f"{side}_elbow",
            f"lowerarm02.{s}": f"{side}_elbow",
            f"wrist.{s}": f"{side}_wrist",
        }
        for toe in range(1, 6):
            for k in range(1, 4):
                table[f"toe{toe}-{k}.{s}"] = f"{side}_foot"
        for k in range(1, 5):
            table[f"metacarpal{k}.{s}"] = f"{side}_wrist"
        for finger, bone in _FINGERS.items():
            for k in range(1, 4):
                table[f"{bone}-{k}.{s}"] = f"{side}_{finger}{k}"
    return table


BONE_TO_JOINT = _bone_to_joint()


def _depth_levels() -> list[tuple[list[int], list[int]]]:
    """SMPL-X joints grouped by depth below the root: [(joints, their parents), ...]."""
    depth = [0] * len(PARENTS)
    for j in range(1, len(PARENTS)):
        depth[j] = depth[PARENTS[j]] + 1
    levels = []
    for d in range(1, max(depth) + 1):
        joints = [j for j in range(len(PARENTS)) if depth[j] == d]
        levels.append((joints, [PARENTS[j] for j in joints]))
    return levels


_DEPTH_LEVELS = _depth_levels()


def _joint_to_bone() -> dict[str, str]:
    """SMPL-X joint -> the Anny bone whose head is that joint's position (jaw: see module)."""
    table = {
        "pelvis": "root",
        "spine1": "spine04",
        "spine2": "spine03",
        "spine3": "spine02",
        "neck": "neck01",
        "head": "head",
        "left_eye": "eye.L",
        "right_eye": "eye.R",
    }
    for side, s in (("left", "L"), ("right", "R")):
        table |= {
            f"{side}_hip": f"upperleg01.{s}",
            f"{side}_knee": f"lowerleg01.{s}",
            f"{side}_ankle": f"foot.{s}",
            f"{side}_foot": f"toe3-1.{s}",
            f"{side}_collar": f"clavicle.{s}",
            f"{side}_shoulder": f"upperarm01.{s}",
            f"{side}_elbow": f"lowerarm01.{s}",
            f"{side}_wrist": f"wrist.{s}",
        }
        for finger, bone in _FINGERS.items():
            for k in range(1, 4):
                table[f"{side}_{finger}{k}"] = f"{bone}-{k}.{s}"
    return table


JOINT_TO_BONE = _joint_to_bone()


def _t_pose_targets() -> dict[str, tuple[str, tuple[float, float, float]]]:
    """Bone -> (bone whose head its direction points at, direction in SMPL-X's T-pose)."""
    targets = {}
    for s, out in (("L", (1.0, 0.0, 0.0)), ("R", (-1.0, 0.0, 0.0))):
        down = (0.0, -1.0, 0.0)
        targets |= {
            f"upperarm01.{s}": (f"upperarm02.{s}", out),
            f"upperarm02.{s}": (f"lowerarm01.{s}", out),
            f"lowerarm01.{s}": (f"lowerarm02.{s}", out),
            f"lowerarm02.{s}": (f"wrist.{s}", out),
            f"wrist.{s}": (f"finger3-1.{s}", out),  # also rolled palm-down, see _t_pose_rotations
            f"upperleg01.{s}": (f"upperleg02.{s}", down),
            f"upperleg02.{s}": (f"lowerleg01.{s}", down),
            f"lowerleg01.{s}": (f"lowerleg02.{s}", down),
            f"lowerleg02.{s}": (f"foot.{s}", down),
        }
        for finger in ("finger2", "finger3", "finger4", "finger5"):  # straight, flat fingers
            targets[f"{finger}-1.{s}"] = (f"{finger}-2.{s}", out)
            targets[f"{finger}-2.{s}"] = (f"{finger}-3.{s}", out)
    return targets


def _swing(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The smallest rotation (3, 3) taking direction src (3,) onto direction dst (3,)."""
    src, dst = src / src.norm(), dst / dst.norm()
    axis = torch.linalg.cross(src, dst)
    angle = torch.atan2(axis.norm(), (src * dst).sum())
    if axis.norm() < 1e-9:
        return torch.eye(3, dtype=src.dtype)
    return roma.rotvec_to_rotmat(axis / axis.norm() * angle)


def _frame(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Orthonormal frame (3, 3), columns: primary, secondary made orthogonal to it, their cross."""
    x = primary / primary.norm()
    y = secondary - (secondary * x).sum() * x
    y = y / y.norm()
    return torch.stack([x, y, torch.linalg.cross(x, y)], dim=1)


def _init_warp() -> None:
    """Initialise Warp (Anny's skinning kernels) without its start-up noise: its banner is off at
    log level WARNING; the warning its CUDA probe prints from C on a machine without a CUDA driver
    goes to ``logging`` (logger ``warp``, INFO) instead. Anything else it prints stays visible."""
    import warp

    from ram_avatar.notices import native_stderr_to_logging

    warp.config.log_level = warp.LOG_WARNING
    with native_stderr_to_logging("warp", _warp_line_level):
        warp.init()  # Anny's modules call it again on import, which then does nothing


def _warp_line_level(line: str) -> int:
    """The logging level of a line Warp printed while initialising: no CUDA driver is the normal
    state of a CPU machine (torch finds none either), not a problem to report."""
    return logging.INFO if "Could not find or load the NVIDIA CUDA driver" in line else logging.WARNING


def _missing_anny_cache() -> Path | None:
    """Anny's cache folder (``ANNY_CACHE_DIR``, default ``~/.cache/anny``) when it holds no built
    body data of the installed Anny yet, so that the next ``anny.Anny()`` builds it (~40 s, once);
    None when it does."""
    from anny.models.model_data import CURRENT_DATA_VERSION
    from anny.paths import get_anny_cache_path

    folder = get_anny_cache_path()
    return None if any((folder / f"v{CURRENT_DATA_VERSION}").glob("*.safetensors")) else folder


class AnnyTemplate(BodyTemplate):
    """Anny (NAVER, Apache-2.0 code, CC0 body data) posed with SMPL-X-layout parameters.

    shape: (B, 6) phenotypes ``gender, age, muscle, weight, height, proportions`` in [0, 1]
    (0.5 = average). expression: (B, 52) ARKit-named facial actions (``expression_labels``),
    0 = neutral, 1 = full.
    """

    name = "anny"

    def __init__(self, skinning_method: str | None = None) -> None:
        super().__init__()
        _init_warp()
        import anny  # imported here: ~1 s

        cache = _missing_anny_cache()
        if cache is not None:
            from ram_avatar.notices import notice

            notice(f"building the Anny body cache in {cache}, once (~40 s, more on a busy CPU)")
        self.model = anny.Anny(facial_actions="all", skinning_method=skinning_method).to(torch.float32)
        model = self.model
        self.shape_labels: list[str] = list(model.phenotype_labels)
        self.expression_labels: list[str] = list(model.facial_action_labels)
        self.shape_dim, self.expression_dim = len(self.shape_labels), len(self.expression_labels)
        labels = list(model.bone_labels)
        bone_parents = torch.as_tensor(model.bone_parents).clone()
        bone_parents[0] = 0
        self.register_buffer("A", A.clone(), persistent=False)
        self.register_buffer("bone_parents", bone_parents, persistent=False)
        ancestors = torch.zeros(len(labels), len(labels))  # [b, a] = 1: a is b or above it, not the root
        for b in range(1, len(labels)):
            a = b
            while a > 0:
                ancestors[b, a], a = 1.0, int(bone_parents[a])
        self.register_buffer("bone_ancestors", ancestors, persistent=False)
        self.register_buffer(
            "bone_joint",
            torch.tensor([JOINT_NAMES.index(BONE_TO_JOINT[b]) for b in labels]),
            persistent=False,
        )
        self.register_buffer(
            "joint_bone",
            torch.tensor([labels.index(JOINT_TO_BONE.get(j, "head")) for j in JOINT_NAMES]),
            persistent=False,
        )
        facial = [list(model.blendshape_labels).index(f"facial_action:{a}") for a in self.expression_labels]
        self.register_buffer("_facial_rows", torch.tensor(facial), persistent=False)  # blendshape rows
        with torch.no_grad():
            rest = model(pose_parameterization="local-ref")  # identity deltas: Anny's rest pose
            heads = rest["bone_poses"][0, :, :3, 3]  # (104, 3)
            self.register_buffer("t_pose", self._t_pose_rotations(labels, heads), persistent=False)
            self._calibrate_jaw(rest["vertices"][0], rest["bone_poses"][0, labels.index("head")])
            self.register_buffer("faces", model.faces.long().clone(), persistent=False)
            self.register_buffer("uvs", model.texture_coordinates.float().clone(), persistent=False)
            self.register_buffer("uv_faces", model.face_texture_coordinate_indices.long().clone(), persistent=False)
            t_posed = self.pose_vertices(SmplxPose.zeros(1), None, None)[0][0]
            self.register_buffer("canonical", self.normalise_canonical(t_posed), persistent=False)

    def _t_pose_rotations(self, labels: list[str], heads: torch.Tensor) -> torch.Tensor:
        """(104, 3, 3) world rotations (Anny frame) taking each rest bone to SMPL-X's T-pose.

        Walks the tree root-first: a bone inherits its parent's rotation, then gets the extra
        swing that points it along its target; the wrist also gets the roll that turns the
        palm down (pinky -> index along SMPL-X +Z).
        """
        targets = _t_pose_targets()
        to_anny = lambda v: A @ torch.tensor(v)  # noqa: E731
        rotations = torch.eye(3).repeat(len(labels), 1, 1)
        for b, label in enumerate(labels):  # Anny lists every parent before its children
            parent = rotations[self.bone_parents[b]] if b > 0 else torch.eye(3)
            rotations[b] = parent
            if label not in targets:
                continue
            child, direction = targets[label]
            along = parent @ (heads[labels.index(child)] - heads[b])
            if label.startswith("wrist."):
                s = label[-1]
                across = parent @ (heads[labels.index(f"finger2-1.{s}")] - heads[labels.index(f"finger5-1.{s}")])
                target = _frame(to_anny(direction), to_anny((0.0, 0.0, 1.0)))
                rotations[b] = target @ _frame(along, across).T @ parent
            else:
                rotations[b] = _swing(along, to_anny(direction)) @ parent
        return rotations

    def _calibrate_jaw(self, rest_vertices: torch.Tensor, head_pose: torch.Tensor) -> None:
        """Measure what jawOpen / jawLeft = 1 do to the mesh, to map SMPL-X jaw rotations.

        jawOpen: a rigid 2D (sagittal) Procrustes fit on the chin vertices gives its angle and
        hinge. jawLeft: a sideways shift of the chin; as a rotation about the hinge's vertical
        axis it is atan(shift / chin-to-hinge distance).
        """
        labels = self.expression_labels

        def moved(action: str) -> torch.Tensor:
            coeffs = torch.zeros(1, self.expression_dim)
            coeffs[0, labels.index(action)] = 1.0
            return self.model(facial_actions=coeffs, pose_parameterization="local-ref")["vertices"][0] - rest_vertices

        disp = moved("jawOpen")
        size = disp.norm(dim=1)
        chin = size > 0.85 * size.max()  # the rigid tip of the jaw
        p = rest_vertices[chin][:, 1:]  # (n, 2) Anny (y, z): the sagittal plane
        q = p + disp[chin][:, 1:]
        pc, qc = p - p.mean(0), q - q.mean(0)
        m = pc.T @ qc
        angle = math.atan2(float(m[0, 1] - m[1, 0]), float(m[0, 0] + m[1, 1]))
        rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        hinge_yz = torch.linalg.solve(torch.eye(2) - rot, q.mean(0) - rot @ p.mean(0))
        hinge = torch.cat([rest_vertices[chin][:, :1].mean(0), hinge_yz])  # (3,) Anny frame
        tip = rest_vertices[size.argmax()]
        lateral = moved("jawLeft")[size.argmax(), 0]  # +x: towards the body's left
        self.jaw_open_angle = abs(angle)
        self.jaw_side_angle = math.atan2(abs(float(lateral)), float((tip[1:] - hinge_yz).norm()))
        self.jaw_left_moves_left = bool(lateral > 0)
        # The hinge in the head bone's frame, so the jaw joint follows the head.
        hinge_local = head_pose[:3, :3].T @ (hinge - head_pose[:3, 3])
        self.register_buffer("jaw_hinge_local", hinge_local, persistent=False)

    def default_shape(self, batch_size: int = 1) -> torch.Tensor:
        return torch.full((batch_size, self.shape_dim), 0.5, device=self.A.device)

    def bone_rotations(self, pose: SmplxPose) -> torch.Tensor:
        """(B, 104, 3, 3) each Anny bone's world rotation from its rest pose, ``V_b``, Anny frame."""
        rotations = roma.rotvec_to_rotmat(pose.full().to(self.A.dtype))  # (B, 55, 3, 3) local
        g = rotations.clone()
        for joints, parents in _DEPTH_LEVELS:  # G_j = G_parent R_j, one tree level at a time
            g[:, joints] = g[:, parents] @ rotations[:, joints]
        # g: (B, 55, 3, 3) global rotations, SMPL-X frame
        g = self.A @ g @ self.A.T  # same rotations in the Anny frame
        return g[:, self.bone_joint] @ self.t_pose

    def anny_pose(self, pose: SmplxPose) -> torch.Tensor:
        """Anny ``local-ref`` pose parameters (B, 104, 4, 4) for a SMPL-X-layout pose."""
        v = self.bone_rotations(pose)  # (B, 104, 3, 3)
        local = v[:, self.bone_parents].transpose(-1, -2) @ v  # D_b = V_parent^T V_b
        local[:, 0] = v[:, 0]  # the root's rotation is its world one
        deltas = torch.eye(4, dtype=v.dtype, device=v.device).repeat(v.shape[0], v.shape[1], 1, 1)
        deltas[:, :, :3, :3] = local
        deltas[:, 0, :3, 3] = pose.transl.to(v.dtype) @ self.A.T  # Anny's root rests at the origin
        return deltas

    def facial_actions(self, pose: SmplxPose, expression: torch.Tensor | None) -> torch.Tensor:
        """(B, 52) facial actions: ``expression`` plus the jaw pose turned into jaw actions."""
        batch = pose.batch_size
        if expression is None:
            expression = torch.zeros(batch, self.expression_dim, device=self.A.device)
        actions = expression.to(self.A.dtype).expand(batch, -1).clone()
        pitch, yaw = pose.jaw_pose[:, 0], pose.jaw_pose[:, 1]  # about SMPL-X +X (opens), +Y
        left, right = (yaw, -yaw) if self.jaw_left_moves_left else (-yaw, yaw)
        for action, angle, unit in (
            ("jawOpen", pitch, self.jaw_open_angle),
            ("jawLeft", left, self.jaw_side_angle),
            ("jawRight", right, self.jaw_side_angle),
        ):
            i = self.expression_labels.index(action)
            actions[:, i] = actions[:, i] + (angle / unit).clamp(0.0, 1.0)
        return actions

    def pose_vertices(
        self,
        pose: SmplxPose,
        shape: torch.Tensor | None,
        expression: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape = self.default_shape() if shape is None else shape
        if not torch.is_grad_enabled():  # no gradient to record: the closed form (same values)
            return self.pose_points(pose, shape, expression)
        out = self.model(
            pose_parameters=self.anny_pose(pose),
            phenotype_kwargs=shape.to(self.A.dtype),
            facial_actions=self.facial_actions(pose, expression),
            pose_parameterization="local-ref",
        )
        bone_poses = out["bone_poses"]  # (B, 104, 4, 4) Anny frame
        joints = self._joints(bone_poses[..., :3, 3], bone_poses[:, self.head_bone, :3, :3])
        # Back to the SMPL-X frame: v_smplx = A^T v_anny, i.e. v @ A for row vectors.
        return out["vertices"] @ self.A, joints @ self.A

    def _shape_rest(self, shape: torch.Tensor, vertex_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """What posing needs from the shape (1 or B, 6) alone: the bones' rest ``heads`` (., 104, 3),
        reference orientations ``U`` and ``to_reference`` (., 104, 3, 3), parent ``offsets``
        (., 104, 3), the neutral rest ``points`` (., M, 3) and skinning ``weights`` (M, 104) of
        ``vertex_ids`` (None: all). Without gradients, all vertices: kept for the last shape seen,
        with sparse ``indices`` / ``bone_weights`` (V, 9) instead of ``weights`` on a CPU."""
        from anny.skinning import skinning

        model = self.model
        cacheable = vertex_ids is None and not torch.is_grad_enabled()
        key = (
            (shape.device, shape.dtype, tuple(shape.shape), shape.detach().cpu().numpy().tobytes())
            if cacheable
            else None
        )
        cached = getattr(self, "_rest_cache", None)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        _, phenotypes, local_changes, _ = model.get_tensor_inputs(None, shape.to(self.A.dtype), None, None)
        actions = torch.zeros(1, self.expression_dim, dtype=self.A.dtype, device=self.A.device)
        # Anny's forward computes these per frame; its (private, anny==0.6.2 pinned) helper once.
        neutral = model._get_phenotype_blendshape_coefficients(phenotypes, local_changes, actions)
        bones = model.get_rest_model(neutral)["rest_bone_poses"]  # (1 or B, 104, 4, 4)
        R, h = bones[..., :3, :3], bones[..., :3, 3]
        U = R if model.reference_bone_orientations is None else model.reference_bone_orientations.expand_as(R)
        parent = self.bone_parents
        to_reference = U @ R.transpose(-1, -2)  # Anny's A_b (the root's unused)
        ids = slice(None) if vertex_ids is None else vertex_ids
        rest = {
            "heads": h,
            "U": U,
            "to_reference": to_reference,
            "offsets": (to_reference[:, parent] @ (h - h[:, parent])[..., None])[..., 0],  # root: 0
            "points": skinning.apply_linear_blendshape(
                model.template_vertices[ids], model.blendshapes[:, ids], neutral
            ),
        }
        if (
            key is not None
            and geometry.COMPILED_CPU_POSING
            and shape.device.type == "cpu"
            and self.A.dtype == torch.float32
        ):
            # Sparse, for the compiled skinning loop: each vertex's (V, 9) bones and weights.
            rest["indices"], rest["bone_weights"] = model.vertex_bone_indices.long(), model.vertex_bone_weights
        else:
            rest["weights"] = skinning.dense_bone_weights(
                model.vertex_bone_weights[ids], model.vertex_bone_indices[ids], model.bone_count
            )  # (M, 104)
        if key is not None:
            self._rest_cache = (key, rest)
        return rest

    @property
    def head_bone(self) -> int:
        return int(self.joint_bone[JOINT_NAMES.index("head")])

    def _joints(self, heads: torch.Tensor, head_orientation: torch.Tensor) -> torch.Tensor:
        """(B, 55, 3) SMPL-X-layout joints, Anny frame, from the posed bones' heads (B, 104, 3)
        and the head bone's posed orientation (B, 3, 3)."""
        joints = heads[:, self.joint_bone]  # (B, 55, 3)
        jaw = head_orientation @ self.jaw_hinge_local + heads[:, self.head_bone]
        return torch.cat([joints[:, :22], jaw[:, None], joints[:, 23:]], dim=1)

    def pose_points(
        self,
        pose: SmplxPose,
        shape: torch.Tensor | None,
        expression: torch.Tensor | None,
        vertex_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pose_vertices`` in closed form: posed ``vertices[:, vertex_ids]`` (B, M, 3) (all
        vertices for ``vertex_ids=None``) and joints (B, 55, 3), the same values (to float
        round-off) at a fraction of the cost. ``pose_vertices`` uses it whenever no gradient is
        recorded; the fit uses it with gradients for its few landmark vertices.

        What Anny's forward spends its time on (CPU): the rest mesh of every frame (188
        blendshapes x 13,718 vertices), its skinning, the phenotype coefficients recomputed per
        frame, and forward kinematics one level of the 17-level bone tree at a time. Here:

        * everything that depends on the shape alone (``_shape_rest``: blendshape coefficients,
          the bones' rest poses, the neutral rest mesh) is computed once per shape, and kept
          while the shape stays the same and needs no gradient (a driven avatar's); facial
          actions move no bone in Anny, only vertices, so per frame only the active facial
          blendshapes are added;
        * the posed bones are the closed form of Anny's ``local-ref`` kinematics for the deltas
          ``anny_pose`` makes (``D_b = V_parent^T V_b``): bone b's orientation is
          ``U_0^T V_b U_b`` (``U``: Anny's reference orientations) and its head
          ``U_0^T (t + sum over its ancestors a, root excluded, of V_parent(a) o_a)``, ``o_a``
          being Anny's reference offset of a from its parent: one matrix product for all bones;
        * skinning is one (M, 104) x (104, 12) product of dense bone weights and bone transforms
          (all vertices on a CPU without gradients: a compiled loop over each vertex's bones).
        """
        shape = self.default_shape() if shape is None else shape
        actions = self.facial_actions(pose, expression)  # (B, 52)
        rest = self._shape_rest(shape, vertex_ids)
        h, U, to_reference = rest["heads"], rest["U"], rest["to_reference"]
        parent = self.bone_parents

        # Posed bones up to the rigid turn U_0^T common to all, applied to the results at the end.
        # einsum: on the CPU, 3x3 products over all bones are ~2x faster than batched matmul.
        v = self.bone_rotations(pose)  # (B, 104, 3, 3)
        steps = torch.einsum("...ij,...j->...i", v[:, parent], rest["offsets"])  # (B, 104, 3)
        root = (pose.transl.to(v.dtype) @ self.A.T)[:, None]  # (B, 1, 3) Anny's root rests at the origin
        heads = root + torch.einsum("ba,nai->nbi", self.bone_ancestors, steps)  # (B, 104, 3)
        skin = torch.einsum("...ij,...jk->...ik", v, to_reference)  # posed x rest^-1 rotations
        transforms = torch.cat([skin, (heads - torch.einsum("...ij,...j->...i", skin, h))[..., None]], dim=-1)

        facial, points = self._facial_rows, rest["points"]  # points: (1 or B, M, 3) neutral rest
        if vertex_ids is None:
            active = actions.abs().amax(0).nonzero()[:, 0]  # usually a few (the jaw) or none
            facial, actions = facial[active], actions[:, active]
        # The neutral coefficients' facial rows are 0: the facial blendshapes add on top.
        blendshapes = self.model.blendshapes.index_select(0, facial)
        if vertex_ids is not None:
            blendshapes = blendshapes[:, vertex_ids]
        points = points + torch.einsum("cpd,bc->bpd", blendshapes, actions)  # (B, M, 3)
        if "indices" in rest:  # all vertices, no gradient, CPU: the compiled loop
            from ram_avatar.body.cpu_posing import skin_cpu

            vertices = skin_cpu(
                points.expand(len(transforms), -1, -1), transforms, rest["indices"], rest["bone_weights"]
            )
        else:
            blend = torch.einsum("mj,bjk->bmk", rest["weights"], transforms.flatten(-2)).unflatten(-1, (3, 4))
            vertices = torch.einsum("bmij,bmj->bmi", blend[..., :3], points) + blend[..., 3]
        joints = self._joints(heads, v[:, self.head_bone] @ U[:, self.head_bone])
        # U_0^T, then back to the SMPL-X frame, for row vectors.
        turn = U[:, 0] @ self.A  # (1 or B, 3, 3)
        return vertices @ turn, joints @ turn
