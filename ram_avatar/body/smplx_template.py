"""The SMPL-X body template: the official model (licensed files, free registration) via ``smplx``.

Loading never unpickles anything. The official ``SMPLX_*.npz`` files hold pickled object arrays
(``joint2num``, ``part2num``) and ``smplx`` opens its file with ``allow_pickle=True``, which would
run any code a crafted file carries. So we read the arrays SMPL-X needs with
``allow_pickle=False``, check them, and hand ``smplx.SMPLX`` a clean copy holding only those.

UV coordinates come from the npz's ``vt`` / ``ft`` arrays (in some releases) or, failing that, from
the official ``smplx_uv.obj`` placed next to the npz.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import smplx
import torch

from ram_avatar.body.layout import NUM_JOINTS, PARENTS, SmplxPose
from ram_avatar.body.template import BodyTemplate

ENV_VAR = "RAM_AVATAR_SMPLX_DIR"
UV_OBJ = "smplx_uv.obj"
GENDERS = ("neutral", "male", "female")
DOWNLOAD_URL = "https://smpl-x.is.tue.mpg.de"

# What smplx reads, and the shapes it needs. Letters are sizes that must agree between arrays:
# V vertices, F triangles, K shape + expression components, L face landmarks, T UV coordinates.
REQUIRED_ARRAYS: dict[str, tuple[int | str, ...]] = {
    "v_template": ("V", 3),
    "f": ("F", 3),
    "shapedirs": ("V", 3, "K"),
    "posedirs": ("V", 3, (NUM_JOINTS - 1) * 9),  # pose blend shapes: 9 per non-root rotation
    "J_regressor": (NUM_JOINTS, "V"),
    "kintree_table": (2, NUM_JOINTS),
    "weights": ("V", NUM_JOINTS),
    "hands_componentsl": (45, 45),
    "hands_componentsr": (45, 45),
    "hands_meanl": (45,),
    "hands_meanr": (45,),
    "lmk_faces_idx": ("L",),
    "lmk_bary_coords": ("L", 3),
}
UV_ARRAYS: dict[str, tuple[int | str, ...]] = {"vt": ("T", 2), "ft": ("F", 3)}
MIN_COMPONENTS = 20  # smplx reads expressions from components 10..19 (v1.0) or 300..399 (v1.1)


class BodyModelNotFoundError(FileNotFoundError):
    """The licensed SMPL-X model file is not where we looked."""


class InvalidBodyModelError(ValueError):
    """A SMPL-X model file we refuse to load: a pickle, or arrays of the wrong kind or shape."""


def resolve_model_file(model_path: str | os.PathLike | None, gender: str = "neutral") -> Path:
    """The ``SMPLX_<GENDER>.npz`` to load.

    Args:
        model_path: the .npz itself, a folder holding it, or a folder whose ``smplx/`` holds it;
            None = ``$RAM_AVATAR_SMPLX_DIR``.
        gender: "neutral", "male" or "female".
    """
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    file_name = f"SMPLX_{gender.upper()}.npz"
    where = model_path if model_path is not None else os.environ.get(ENV_VAR)
    candidates: list[Path] = []
    if where:
        root = Path(where).expanduser()
        direct = root.is_file() or root.suffix in (".npz", ".pkl")
        candidates = [root] if direct else [root / file_name, root / "smplx" / file_name]
    for candidate in candidates:
        if candidate.is_file():
            _refuse_pickle(candidate)
            if candidate.suffix != ".npz":
                raise InvalidBodyModelError(f"{candidate} is not a .npz file; expected {file_name}")
            return candidate
    for candidate in candidates:  # only the pickle version is there
        _refuse_pickle(candidate.with_suffix(".pkl"))
    looked = ", ".join(str(c) for c in candidates) or f"nowhere (no path given, ${ENV_VAR} unset)"
    raise BodyModelNotFoundError(
        f"SMPL-X model file {file_name} not found; looked in: {looked}.\n"
        f"SMPL-X files need a free registration at {DOWNLOAD_URL}: download "
        f'"SMPL-X v1.1 — NPZ+PKL", put {file_name} in a folder DIR, then pass '
        f"`--body-model-path DIR` or set {ENV_VAR}=DIR.\n"
        "The default `anny` body template needs no files."
    )


def _refuse_pickle(path: Path) -> None:
    """Raise if ``path`` is an existing .pkl: we never unpickle model files."""
    if path.suffix == ".pkl" and path.exists():
        raise InvalidBodyModelError(
            f"{path} is a pickle, and loading a pickle can run arbitrary code, so ram-avatar "
            f"only loads the .npz model files: use {path.with_suffix('.npz').name} from the "
            f"same SMPL-X download ({DOWNLOAD_URL})."
        )


def read_model_arrays(path: Path) -> dict[str, np.ndarray]:
    """The SMPL-X arrays of an npz, read without unpickling and checked.

    Returns the arrays of ``REQUIRED_ARRAYS``, plus ``vt`` / ``ft`` where the file has both;
    other entries (e.g. the official files' pickled ``joint2num``) are never read.
    """
    if not zipfile.is_zipfile(path):
        raise InvalidBodyModelError(f"{path} is not an .npz archive")
    specs = dict(REQUIRED_ARRAYS)
    arrays: dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as npz:
        missing = [key for key in specs if key not in npz.files]
        if missing:
            raise InvalidBodyModelError(f"{path} lacks the SMPL-X arrays {missing}")
        if all(key in npz.files for key in UV_ARRAYS):
            specs |= UV_ARRAYS
        for key in specs:
            try:
                arrays[key] = npz[key]
            except ValueError as error:  # an object array: loading it means unpickling
                raise InvalidBodyModelError(
                    f"{path}: array {key!r} is stored as a pickled object, which we refuse to "
                    f"load (pickles can run code): {error}"
                ) from None
    _check_shapes(path, arrays, specs)
    _check_indices(path, arrays)
    return arrays


def _check_shapes(path: Path, arrays: dict[str, np.ndarray], specs: dict[str, tuple[int | str, ...]]) -> None:
    sizes: dict[str, int] = {}
    for key, spec in specs.items():
        array = arrays[key]
        if array.dtype.kind not in "biuf":
            raise InvalidBodyModelError(f"{path}: {key!r} has non-numeric dtype {array.dtype}")
        ok = array.ndim == len(spec)
        for size, want in zip(array.shape, spec):
            want = sizes.setdefault(want, size) if isinstance(want, str) else want
            ok = ok and size == want
        if not ok:
            raise InvalidBodyModelError(f"{path}: {key!r} has shape {array.shape}, expected {spec} with sizes {sizes}")
    if sizes["K"] < MIN_COMPONENTS:
        raise InvalidBodyModelError(
            f"{path}: 'shapedirs' has {sizes['K']} components, expected at least "
            f"{MIN_COMPONENTS} (10 shape + 10 expression)"
        )


def _check_indices(path: Path, arrays: dict[str, np.ndarray]) -> None:
    if tuple(arrays["kintree_table"][0, 1:]) != PARENTS[1:]:
        raise InvalidBodyModelError(f"{path}: 'kintree_table' is not the SMPL-X kinematic tree")
    bounds = {"f": len(arrays["v_template"]), "lmk_faces_idx": len(arrays["f"])}
    if "vt" in arrays:
        bounds["ft"] = len(arrays["vt"])
    for key, bound in bounds.items():
        if arrays[key].size and (arrays[key].min() < 0 or arrays[key].max() >= bound):
            raise InvalidBodyModelError(f"{path}: {key!r} has indices outside [0, {bound})")


def read_uv_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texture coordinates and triangles of an OBJ such as the official ``smplx_uv.obj``.

    Returns:
        vt (T, 2) float32, vertex triangles (F, 3) and UV triangles (F, 3), both int64, 0-based.
    """
    uvs: list[list[float]] = []
    faces: list[list[int]] = []
    uv_faces: list[list[int]] = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            tag, *values = line.split() or [""]
            if tag == "vt":
                uvs.append([float(value) for value in values[:2]])
            elif tag == "f":
                corners = [value.split("/") for value in values]
                if len(corners) != 3 or any(len(c) < 2 or not c[1] for c in corners):
                    raise InvalidBodyModelError(f"{path}:{number}: expected a triangle with UVs (f v/vt v/vt v/vt)")
                faces.append([int(c[0]) - 1 for c in corners])
                uv_faces.append([int(c[1]) - 1 for c in corners])
    return (
        np.array(uvs, dtype=np.float32).reshape(-1, 2),
        np.array(faces, dtype=np.int64).reshape(-1, 3),
        np.array(uv_faces, dtype=np.int64).reshape(-1, 3),
    )


def load_uvs(npz_path: Path, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """UVs (T, 2) float32 in [0, 1] and UV triangles (F, 3) int64, from the npz or smplx_uv.obj."""
    if "vt" in arrays:
        uvs, uv_faces = arrays["vt"], arrays["ft"]
    else:
        obj_path = npz_path.parent / UV_OBJ
        if not obj_path.is_file():
            raise BodyModelNotFoundError(
                f"The avatar needs UV coordinates, but {npz_path} has no 'vt' / 'ft' arrays and "
                f'there is no {UV_OBJ} next to it. Download "SMPL-X UV" from the SMPL-X '
                f"download page ({DOWNLOAD_URL}, same registration) and put {UV_OBJ} in "
                f"{npz_path.parent}."
            )
        uvs, faces, uv_faces = read_uv_obj(obj_path)
        if not np.array_equal(faces, arrays["f"]):
            raise InvalidBodyModelError(
                f"{obj_path}: its triangles are not those of {npz_path.name} ({len(faces)} vs "
                f"{len(arrays['f'])} triangles, or in another order)"
            )
        if uv_faces.min() < 0 or uv_faces.max() >= len(uvs):
            raise InvalidBodyModelError(f"{obj_path}: face UV indices outside [1, {len(uvs)}]")
    if uvs.min() < -1e-3 or uvs.max() > 1 + 1e-3:
        raise InvalidBodyModelError(f"UVs of {npz_path} fall outside [0, 1]")
    return np.clip(uvs, 0, 1).astype(np.float32), uv_faces.astype(np.int64)


def build_smplx(arrays: dict[str, np.ndarray], gender: str, num_betas: int, num_expression_coeffs: int) -> smplx.SMPLX:
    """``smplx.SMPLX`` over a pickle-free copy of checked arrays, holding no pose state.

    ``flat_hand_mean=True``: the layout's zero hand pose is the flat hand.
    """
    clean = {
        key: arrays[key].astype(np.float32) if arrays[key].dtype.kind == "f" else arrays[key] for key in REQUIRED_ARRAYS
    }
    no_state = dict.fromkeys(
        (
            "create_betas",
            "create_expression",
            "create_global_orient",
            "create_body_pose",
            "create_left_hand_pose",
            "create_right_hand_pose",
            "create_jaw_pose",
            "create_leye_pose",
            "create_reye_pose",
            "create_transl",
        ),
        False,
    )
    with tempfile.TemporaryDirectory(prefix="ram_avatar_smplx_") as folder:
        path = Path(folder) / f"SMPLX_{gender.upper()}.npz"
        np.savez(path, **clean)
        model = smplx.SMPLX(
            model_path=str(path),
            ext="npz",
            gender=gender,
            num_betas=num_betas,
            num_expression_coeffs=num_expression_coeffs,
            use_pca=False,
            flat_hand_mean=True,
            use_face_contour=False,
            **no_state,
        )
    # We return the 55 skeleton joints only; smplx's extra keypoints are picked by vertex ids of
    # the official mesh, so pick none.
    model.vertex_joint_selector.extra_joints_idxs = torch.zeros(0, dtype=torch.long)
    return model


class SmplxTemplate(BodyTemplate):
    """SMPL-X: shape = its ``betas``, expression = its expression coefficients."""

    name = "smplx"

    def __init__(
        self,
        model_path: str | os.PathLike | None,
        gender: str = "neutral",
        num_betas: int = 10,
        num_expression_coeffs: int = 10,
    ) -> None:
        """
        Args:
            model_path: ``SMPLX_<GENDER>.npz``, or a folder holding it (directly or in
                ``smplx/``); None = ``$RAM_AVATAR_SMPLX_DIR``.
            gender: "neutral", "male" or "female".
            num_betas: shape coefficients (at most 10 with v1.0 files, 300 with v1.1).
            num_expression_coeffs: expression coefficients (at most 10 / 100).
        """
        super().__init__()
        self.model_file = resolve_model_file(model_path, gender)
        arrays = read_model_arrays(self.model_file)
        uvs, uv_faces = load_uvs(self.model_file, arrays)
        self.model = build_smplx(arrays, gender, num_betas, num_expression_coeffs)
        self.shape_dim = self.model.num_betas
        self.expression_dim = self.model.num_expression_coeffs
        self.register_buffer("faces", self.model.faces_tensor.clone())  # (F, 3)
        self.register_buffer("uvs", torch.from_numpy(uvs))  # (T, 2)
        self.register_buffer("uv_faces", torch.from_numpy(uv_faces))  # (F, 3)
        # Zero pose, zero betas and expression: the LBS output is the template mesh itself.
        self.register_buffer("canonical", self.normalise_canonical(self.model.v_template))  # (V, 3)

    def pose_vertices(
        self,
        pose: SmplxPose,
        shape: torch.Tensor | None,
        expression: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pose.batch_size
        pose = pose.to(self.canonical)
        output = self.model(
            betas=self._per_frame(shape, batch, self.shape_dim, "shape"),  # (B, shape_dim)
            expression=self._per_frame(expression, batch, self.expression_dim, "expression"),
            global_orient=pose.global_orient,  # (B, 3)
            body_pose=pose.body_pose.reshape(batch, -1),  # (B, 63)
            jaw_pose=pose.jaw_pose,  # (B, 3)
            leye_pose=pose.leye_pose,
            reye_pose=pose.reye_pose,
            left_hand_pose=pose.left_hand_pose.reshape(batch, -1),  # (B, 45)
            right_hand_pose=pose.right_hand_pose.reshape(batch, -1),
            transl=pose.transl,  # (B, 3)
            return_shaped=False,
        )
        # smplx's joints: the 55 skeleton joints in our layout order, then face landmarks.
        return output.vertices, output.joints[:, :NUM_JOINTS]

    def default_shape(self, batch_size: int = 1) -> torch.Tensor:
        return self.canonical.new_zeros(batch_size, self.shape_dim)

    def _per_frame(self, coeffs: torch.Tensor | None, batch: int, dim: int, what: str) -> torch.Tensor:
        """(B or 1, dim) coefficients, None = zeros, as (B, dim) in the template's dtype/device."""
        if coeffs is None:
            return self.canonical.new_zeros(batch, dim)
        if coeffs.dim() != 2 or coeffs.shape[0] not in (1, batch) or coeffs.shape[1] != dim:
            raise ValueError(f"{what} must be (B or 1, {dim}) with B={batch}, got {tuple(coeffs.shape)}")
        return coeffs.to(self.canonical).expand(batch, dim)
