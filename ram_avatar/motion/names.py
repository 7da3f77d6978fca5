"""Which BVH joint drives which SMPL-X joint: a name table plus one structural rule.

Names are compared after :func:`normalise`: the namespace (``mixamorig:``, ``Character1:``) and
the ``mixamorig`` / ``Bip01`` prefixes are dropped, letters lower-cased and everything but
letters and digits removed, so ``mixamorig:LeftUpLeg``, ``Left_UpLeg`` and ``leftupleg`` are
one name. A sided base name ``upleg`` matches ``leftupleg``, ``lupleg``, ``uplegleft`` and
``uplegl`` (and the same with right / r).

``NAME_TABLE`` lists, per SMPL-X joint, the base names tried in order; each BVH joint is used
once and the table is walked top to bottom, which settles the one real clash: CMU's
``LeftShoulder`` is the upper arm (its collar is ``LeftCollar``), Mixamo's is the collar (its
upper arm is ``LeftArm``). Covered: CMU (``LeftHip`` / ``LHipJoint`` ..., and the MotionBuilder
CMU names ``LeftUpLeg`` ... of MPFB2's cmu_mb rig), Mixamo and Rokoko (``LeftArm``,
``LeftHandIndex1`` ...), AnimatedDrawings 'fair1' (``LeftHandThumb1``), Unity / Rokoko Newton
humanoid names (``LeftUpperArm``, ``LeftIndexProximal``), Unreal (``upperarm_l``,
``index_01_l``) and 3ds Max Biped (``Bip01 L Thigh``, ``L Finger11``). Extend it by adding base
names (already normalised) to the lists, or pass ``extra_names`` to :func:`map_joints`.

The spine is assigned by structure, not names (rigs have 1 to 4 spine joints named alike):
the BVH joints from the pelvis up to the joint where the neck and the arms branch off become
``spine3`` (the branch joint), ``spine1`` (the first) and ``spine2`` (the middle one). Joints
that match nothing (``LHipJoint``, ``lowerneck``, ``LeftInHandIndex``, end joints, CMU's
one-joint ``LThumb`` / ``LFingers``, whose capture is too coarse to pose a hand) drive no
SMPL-X joint; their rotation still reaches the next mapped joint below them (see ``bvh.py``).
"""

from __future__ import annotations

import re

SIDES = {"left": ("left", "l"), "right": ("right", "r")}
_FINGERS = {
    "thumb": ("thumb", "0"),
    "index": ("index", "1"),
    "middle": ("middle", "2"),
    "ring": ("ring", "3"),
    "pinky": ("pinky", "4"),
}
_UNITY_PHALANX = ("proximal", "intermediate", "distal")


def _finger_names(finger: str, k: int) -> list[str]:
    word, biped = _FINGERS[finger]
    words = [word, "little"] if finger == "pinky" else [word]
    names = []
    for w in words:
        names += [f"hand{w}{k}", f"{w}{k}", f"{w}0{k}", f"{w}{_UNITY_PHALANX[k - 1]}", f"{w}finger{k}"]
    names.append(f"finger{biped}" + ("" if k == 1 else str(k - 1)))  # Biped: Finger1, Finger11, Finger12
    return names


def _name_table() -> list[tuple[str, tuple[str, ...], bool]]:
    """(SMPL-X joint, base names in priority order, sided?) in the order joints are matched."""
    table: list[tuple[str, tuple[str, ...], bool]] = [
        ("pelvis", ("hips", "pelvis", "hip"), False),
        ("neck", ("neck", "neck01", "neck1"), False),
        ("head", ("head",), False),
        ("jaw", ("jaw",), False),
    ]
    sided = [
        ("hip", ("upleg", "upperleg", "thigh", "hip", "femur")),
        ("knee", ("leg", "lowerleg", "knee", "lowleg", "calf", "shin")),
        ("ankle", ("foot", "ankle")),
        ("foot", ("toebase", "toe", "toes", "ball", "toe0")),
        # the upper arm before the collar: "shoulder" is CMU's upper arm only when no "arm" exists
        ("shoulder", ("upperarm", "arm", "uparm", "humerus", "shoulder")),
        ("collar", ("collar", "clavicle", "shoulder")),
        ("elbow", ("forearm", "lowerarm", "elbow", "lowarm")),
        ("wrist", ("hand", "wrist")),
        ("eye", ("eye",)),
    ]
    sided += [(f"{f}{k}", tuple(_finger_names(f, k))) for f in _FINGERS for k in (1, 2, 3)]
    for side in SIDES:
        table += [(f"{side}_{joint}", names, True) for joint, names in sided]
    return table


NAME_TABLE = _name_table()
_PREFIXES = ("mixamorig", "bip01", "bip001")


def normalise(name: str) -> str:
    """Compare-ready joint name: ``"mixamorig:Left_UpLeg"`` -> ``"leftupleg"``."""
    name = re.sub(r"[^a-z0-9]", "", name.rsplit(":", 1)[-1].lower())
    for prefix in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    return name


def _sided(side: str, base: str) -> list[str]:
    return [form for word in SIDES[side] for form in (word + base, base + word)]


def match_names(names: list[str], extra_names: dict[str, list[str]] | None = None) -> dict[str, int]:
    """SMPL-X joint -> index into ``names`` for every joint the table (spine excluded) finds.

    Args:
        names: the BVH joint names, in file order.
        extra_names: SMPL-X joint -> more names to try first (raw BVH names, normalised here).
    """
    lookup: dict[str, int] = {}
    for i, name in enumerate(names):
        lookup.setdefault(normalise(name), i)
    used: set[int] = set()
    found: dict[str, int] = {}

    def take(joint: str, candidates: list[str]) -> None:
        for candidate in candidates:
            index = lookup.get(candidate)
            if index is not None and index not in used:
                found[joint] = index
                used.add(index)
                return

    for joint, extra in (extra_names or {}).items():
        take(joint, [normalise(n) for n in extra])
    for joint, bases, is_sided in NAME_TABLE:
        if joint in found:
            continue
        side = joint.split("_", 1)[0]
        take(joint, [form for base in bases for form in _sided(side, base)] if is_sided else list(bases))
    return found


def assign_spine(parents: list[int], found: dict[str, int]) -> dict[str, int]:
    """``spine1..3`` from the hierarchy (see the module docstring); {} when there is no branch.

    Args:
        parents: BVH parent index per joint (-1 for the root).
        found: what :func:`match_names` found (needs the pelvis, and the neck or head plus at
            least one collar or shoulder).
    """

    def ancestors(i: int) -> list[int]:  # i, its parent, ..., the root
        chain = [i]
        while parents[chain[-1]] >= 0:
            chain.append(parents[chain[-1]])
        return chain

    top = found.get("neck", found.get("head"))
    arms = [found[j] for s in SIDES for j in (f"{s}_collar", f"{s}_shoulder") if j in found][:1]
    if "pelvis" not in found or top is None or not arms:
        return {}
    shared = set(ancestors(arms[0]))
    branch = next((i for i in ancestors(top)[1:] if i in shared), None)  # lowest common ancestor
    path = ancestors(branch) if branch is not None else []
    if found["pelvis"] not in path:
        return {}
    chain = path[: path.index(found["pelvis"])][::-1]  # pelvis (exclusive) .. branch (inclusive)
    if not chain:
        return {}
    spine = {"spine3": chain[-1]}
    if len(chain) >= 2:
        spine["spine1"] = chain[0]
    if len(chain) >= 3:
        spine["spine2"] = chain[len(chain) // 2]
    return spine
