"""The SMPL-X template on a tiny synthetic SMPL-X file (no licensed files needed)."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest
import torch
from smplx_fixture import synthetic_smplx_arrays, write_synthetic_smplx, write_uv_obj

from ram_avatar.body import JOINT_NAMES, NUM_JOINTS, PARENTS, BodyTemplate, SmplxPose, load_template
from ram_avatar.body.smplx_template import (
    ENV_VAR,
    BodyModelNotFoundError,
    InvalidBodyModelError,
    SmplxTemplate,
)

J = {name: i for i, name in enumerate(JOINT_NAMES)}
ARRAYS = synthetic_smplx_arrays()


class Canary:
    """Unpickling this creates a file: proof that someone unpickled it."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def canary_array(path: pathlib.Path) -> np.ndarray:
    array = np.empty((), dtype=object)
    array[()] = Canary(path)
    return array


def descendants(joint: int) -> set[int]:
    children = {j for j, parent in enumerate(PARENTS) if parent == joint}
    return children.union(*(descendants(c) for c in children))


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> SmplxTemplate:
    return SmplxTemplate(write_synthetic_smplx(tmp_path_factory.mktemp("smplx")).parent)


# --- finding and refusing model files ------------------------------------------------------


def test_loads_from_folder_file_subfolder_and_env(tmp_path, monkeypatch):
    npz = write_synthetic_smplx(tmp_path / "smplx")
    assert SmplxTemplate(tmp_path / "smplx").model_file == npz
    assert SmplxTemplate(npz).model_file == npz
    assert SmplxTemplate(tmp_path).model_file == npz  # DIR/smplx/SMPLX_NEUTRAL.npz
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert SmplxTemplate(None).model_file == npz


def test_gender_picks_its_file(tmp_path):
    npz = write_synthetic_smplx(tmp_path, gender="male")
    assert SmplxTemplate(tmp_path, gender="male").model_file == npz
    with pytest.raises(BodyModelNotFoundError, match="SMPLX_NEUTRAL.npz"):
        SmplxTemplate(tmp_path)


@pytest.mark.parametrize("where", ["empty folder", "unset"])
def test_missing_model_explains_how_to_get_it(tmp_path, monkeypatch, where):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(BodyModelNotFoundError) as error:
        SmplxTemplate(tmp_path if where == "empty folder" else None)
    message = str(error.value)
    needed = ("SMPLX_NEUTRAL.npz", ENV_VAR, "https://smpl-x.is.tue.mpg.de", "--body-model-path")
    assert all(text in message for text in needed), message
    assert "`anny` body template needs no files" in message
    assert isinstance(error.value, FileNotFoundError)


def test_pickle_model_is_refused_unopened(tmp_path):
    canary = tmp_path / "unpickled"
    pkl = tmp_path / "SMPLX_NEUTRAL.pkl"
    pkl.write_bytes(pickle.dumps(Canary(canary)))
    for model_path in (pkl, tmp_path):  # the file itself, or a folder holding only the .pkl
        with pytest.raises(InvalidBodyModelError, match="SMPLX_NEUTRAL.npz"):
            SmplxTemplate(model_path)
    assert not canary.exists()


def test_object_array_in_a_needed_key_is_refused_unpickled(tmp_path):
    canary = tmp_path / "unpickled"
    npz = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(npz, **{**ARRAYS, "weights": canary_array(canary)})
    with np.load(npz, allow_pickle=True) as unsafe:
        unsafe["weights"]  # the canary works: unpickling it creates the file
    assert canary.exists()
    canary.unlink()
    with pytest.raises(InvalidBodyModelError, match="'weights'.*pickle"):
        SmplxTemplate(npz)
    assert not canary.exists()


def test_official_pickled_extras_are_never_unpickled(tmp_path):
    """The official npz files carry pickled dicts (joint2num, part2num) smplx itself would load."""
    canary = tmp_path / "unpickled"
    npz = tmp_path / "SMPLX_NEUTRAL.npz"
    np.savez(npz, **ARRAYS, joint2num=canary_array(canary), part2num=canary_array(canary))
    assert SmplxTemplate(npz).num_vertices == len(ARRAYS["v_template"])
    assert not canary.exists()


@pytest.mark.parametrize(
    "key, bad",
    [
        ("posedirs", None),  # missing
        ("J_regressor", ARRAYS["J_regressor"][:, :-1]),
        ("weights", ARRAYS["weights"][:, :54]),
        ("shapedirs", ARRAYS["shapedirs"][..., :12]),
        ("kintree_table", np.stack([np.arange(NUM_JOINTS) - 1, np.arange(NUM_JOINTS)])),
        ("f", ARRAYS["f"] + len(ARRAYS["v_template"])),
        ("ft", ARRAYS["ft"][:-1]),
    ],
)
def test_bad_arrays_are_named(tmp_path, key, bad):
    arrays = {k: v for k, v in ARRAYS.items() if k != key}
    if bad is not None:
        arrays[key] = bad
    np.savez(tmp_path / "SMPLX_NEUTRAL.npz", **arrays)
    with pytest.raises(InvalidBodyModelError, match=f"'{key}'"):
        SmplxTemplate(tmp_path)


# --- UVs ---------------------------------------------------------------------------------------


def test_uvs_from_npz(template):
    assert template.uvs.dtype == torch.float32 and template.uv_faces.dtype == torch.long
    assert torch.equal(template.uvs, torch.from_numpy(ARRAYS["vt"]))
    assert torch.equal(template.uv_faces, torch.from_numpy(ARRAYS["ft"]))
    assert not torch.equal(template.uv_faces, template.faces)  # seams: a UV per corner


def test_uvs_from_obj_next_to_npz(tmp_path):
    npz = write_synthetic_smplx(tmp_path, uv_obj=True)
    with np.load(npz) as stored:
        assert "vt" not in stored.files
    template = SmplxTemplate(npz)
    assert torch.allclose(template.uvs, torch.from_numpy(ARRAYS["vt"]), atol=1e-6)
    assert torch.equal(template.uv_faces, torch.from_numpy(ARRAYS["ft"]))


def test_missing_uvs_explain_where_to_get_them(tmp_path):
    write_synthetic_smplx(tmp_path, with_uv=False)
    with pytest.raises(BodyModelNotFoundError, match="smplx_uv.obj") as error:
        SmplxTemplate(tmp_path)
    assert "SMPL-X UV" in str(error.value)


def test_obj_of_another_mesh_is_refused(tmp_path):
    write_synthetic_smplx(tmp_path, with_uv=False)
    write_uv_obj(tmp_path / "smplx_uv.obj", {**ARRAYS, "f": ARRAYS["f"][:, [0, 2, 1]]})
    with pytest.raises(InvalidBodyModelError, match="triangles"):
        SmplxTemplate(tmp_path)


# --- buffers and posing ------------------------------------------------------------------------


def test_buffers(template):
    assert isinstance(template, BodyTemplate) and template.name == "smplx"
    assert template.shape_dim == 10 and template.expression_dim == 10
    assert template.faces.dtype == torch.long
    assert torch.equal(template.faces, torch.from_numpy(ARRAYS["f"].astype(np.int64)))
    assert template.canonical.shape == (len(ARRAYS["v_template"]), 3)
    assert template.canonical.abs().max() == pytest.approx(1.0)
    assert torch.equal(template.default_shape(2), torch.zeros(2, 10))
    assert dict(template.named_parameters()) == {}  # pose and shape are per call, not state


def test_output_shapes_and_normals(template):
    out = template(SmplxPose.zeros(2))
    V = template.num_vertices
    assert out.vertices.shape == (2, V, 3) and out.normals.shape == (2, V, 3)
    assert out.joints.shape == (2, NUM_JOINTS, 3)
    assert torch.allclose(out.normals.norm(dim=-1), torch.ones(2, V))


def test_zero_pose_is_the_rest_mesh(template):
    """Also checks flat_hand_mean: the fixture's hand means are not zero."""
    out = template(SmplxPose.zeros(1))
    v_template = torch.from_numpy(ARRAYS["v_template"])
    assert torch.allclose(out.vertices[0], v_template, atol=1e-6)
    J_regressor = torch.from_numpy(ARRAYS["J_regressor"])
    assert torch.allclose(out.joints[0], J_regressor @ v_template, atol=1e-6)


def test_each_joint_rotation_moves_exactly_its_subtree(template):
    """Batch element j rotates layout joint j: checks the routing of every pose parameter."""
    rest = template(SmplxPose.zeros(1))
    full = torch.zeros(NUM_JOINTS, NUM_JOINTS, 3)
    full[range(NUM_JOINTS), range(NUM_JOINTS)] = torch.tensor([0.37, 0.52, -0.61])
    out = template(SmplxPose.from_full(full, torch.zeros(NUM_JOINTS, 3)))
    joint_moves = (out.joints - rest.joints).norm(dim=-1)  # (55, 55)
    vertex_moves = (out.vertices - rest.vertices).norm(dim=-1)  # (55, V)
    weights = torch.from_numpy(ARRAYS["weights"])
    for j in range(NUM_JOINTS):
        below = sorted(descendants(j))
        moved = joint_moves[j] > 1e-4
        assert moved.nonzero().flatten().tolist() == below, JOINT_NAMES[j]
        assert (joint_moves[j][~moved] < 1e-6).all(), JOINT_NAMES[j]
        skinned = weights[:, [j, *below]].sum(1) > 0
        assert (vertex_moves[j][skinned] > 1e-4).all(), JOINT_NAMES[j]
        assert (vertex_moves[j][~skinned] < 1e-6).all(), JOINT_NAMES[j]
    # Spelled out for one joint: the left elbow carries the left wrist and the left fingers.
    elbow = (joint_moves[J["left_elbow"]] > 1e-4).nonzero().flatten().tolist()
    fingers = ("index", "middle", "pinky", "ring", "thumb")
    assert {JOINT_NAMES[i] for i in elbow} == {"left_wrist"} | {
        f"left_{finger}{k}" for finger in fingers for k in (1, 2, 3)
    }


def test_transl_shifts_everything(template):
    pose = SmplxPose.zeros(1)
    pose.body_pose[0, J["left_knee"] - 1] = torch.tensor([0.5, 0.0, 0.0])
    moved = SmplxPose.from_full(pose.full(), torch.tensor([[0.1, -0.2, 0.3]]))
    a, b = template(pose), template(moved)
    assert torch.allclose(b.vertices - a.vertices, moved.transl.expand_as(a.vertices[0]), atol=1e-6)
    assert torch.allclose(b.joints - a.joints, moved.transl.expand_as(a.joints[0]), atol=1e-6)


def test_shape_is_betas_and_expression_is_expression(template):
    v_template = torch.from_numpy(ARRAYS["v_template"])
    shapedirs = torch.from_numpy(ARRAYS["shapedirs"])
    one = torch.zeros(1, 10)
    one[0, 0] = 1.0
    shaped = template(SmplxPose.zeros(1), shape=one)
    assert torch.allclose(shaped.vertices[0], v_template + shapedirs[..., 0], atol=1e-6)
    smiling = template(SmplxPose.zeros(1), expression=one)
    assert torch.allclose(smiling.vertices[0], v_template + shapedirs[..., 300], atol=1e-6)


def test_shape_and_expression_of_batch_one_broadcast(template):
    shape, expression = torch.randn(1, 10), torch.randn(1, 10)
    pose = SmplxPose.zeros(3)
    pose.body_pose[:, 0, 0] = torch.tensor([0.0, 0.4, -0.4])
    batched = template(pose, shape=shape, expression=expression)
    for i in range(3):
        single = template(pose[i], shape=shape, expression=expression)
        assert torch.allclose(batched.vertices[i], single.vertices[0], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        template(pose, shape=torch.zeros(2, 10))


def test_follows_dtype(tmp_path):
    template = SmplxTemplate(write_synthetic_smplx(tmp_path)).to(torch.float64)
    out = template(SmplxPose.zeros(2), shape=torch.zeros(1, 10))
    assert out.vertices.dtype == out.joints.dtype == torch.float64
    assert template.canonical.dtype == torch.float64


def test_num_betas(tmp_path):
    assert SmplxTemplate(write_synthetic_smplx(tmp_path), num_betas=16).shape_dim == 16


def test_load_template(tmp_path):
    template = load_template("smplx", model_path=write_synthetic_smplx(tmp_path).parent)
    assert isinstance(template, SmplxTemplate) and not template.training
    assert template(SmplxPose.zeros(1)).vertices.shape == (1, len(ARRAYS["v_template"]), 3)
