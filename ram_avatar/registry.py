"""The one registry of the classes an avatar folder's parts may be.

An avatar folder's ``model_index.json`` names each part's library and class, in diffusers'
convention (``"avatar": ["ram_avatar", "RamAvatar"]``); the loader asks this registry for the
class and never imports a module a file names: a folder may come from any Hub repo, and importing
a module runs it. A class missing here is refused with a one-line error.

Each part has a role (the folder it is saved in): ``avatar`` (the renderer of the person),
``pose_decoder`` and ``pose_prior`` (Motion Distribution Align). ram-avatar's own classes are
listed below by module, so that reading a manifest (``ram-avatar info``) imports no torch; other
code adds its classes with :func:`register`, e.g. an alternative renderer::

    from ram_avatar.registry import register
    register("avatar", MyRenderer)   # saved as ["my_package", "MyRenderer"]; loads with no edit to the loader

A registered class saves with ``save_pretrained(folder)`` and loads with
``from_pretrained(folder)`` (a :class:`~ram_avatar.models.hub.HubModel` does both and checks
the files first); a renderer has the ``RamAvatar`` interface (``prepare_inputs``, ``forward``).
"""

from __future__ import annotations

import importlib

ROLES = ("avatar", "pose_decoder", "pose_prior")
LIBRARY = "ram_avatar"  # the library name of ram-avatar's own classes in model_index.json

# role -> {(library, class name): the module that defines it (ram-avatar's own) or the class (registered)}
_CLASSES: dict[str, dict[tuple[str, str], str | type]] = {
    "avatar": {
        (LIBRARY, "RamAvatar"): "ram_avatar.models.avatar",
        (LIBRARY, "BaselineUNet"): "ram_avatar.models.baseline_unet",
    },
    "pose_decoder": {(LIBRARY, "SubjectPoseDecoder"): "ram_avatar.models.pose_decoder"},
    "pose_prior": {(LIBRARY, "PoseVAE"): "ram_avatar.models.pose_vae"},
}


class UnknownComponentError(ValueError):
    """A part's class is not in the registry (or not registered for that role)."""


def register(role: str, cls: type, library: str | None = None) -> type:
    """Add ``cls`` to the classes a part in ``role`` may be, named ``[library, cls.__name__]`` in
    ``model_index.json`` (``library``: default, the top package of ``cls``'s module). Returns ``cls``."""
    _check_role(role)
    _CLASSES[role][(library or cls.__module__.split(".")[0], cls.__name__)] = cls
    return cls


def is_registered(role: str, library: str, name: str) -> bool:
    """Whether ``[library, name]`` is a class a part in ``role`` may be (imports nothing)."""
    _check_role(role)
    return (library, name) in _CLASSES[role]


def registered(role: str) -> list[str]:
    """The ``library.Class`` names registered for ``role``, for messages."""
    _check_role(role)
    return [f"{library}.{name}" for library, name in _CLASSES[role]]


def component_class(role: str, library: str, name: str) -> type:
    """The class registered as ``[library, name]`` for ``role``; raises
    :class:`UnknownComponentError` for any other name (nothing is imported for it)."""
    if not is_registered(role, library, name):
        raise UnknownComponentError(
            f"{library}.{name} is not a class ram-avatar loads as {role} (it loads {', '.join(registered(role))}); "
            "register it with ram_avatar.registry.register, or re-save the avatar"
        )
    entry = _CLASSES[role][(library, name)]
    return getattr(importlib.import_module(entry), name) if isinstance(entry, str) else entry


def component_name(role: str, cls: type) -> tuple[str, str]:
    """``(library, class name)`` of a registered class ``cls`` for ``role``, as ``model_index.json``
    records it; raises :class:`UnknownComponentError` for a class that would not load again."""
    _check_role(role)
    for (library, name), entry in _CLASSES[role].items():
        if entry is cls or (isinstance(entry, str) and name == cls.__name__ and cls.__module__ == entry):
            return library, name
    raise UnknownComponentError(
        f"{cls.__module__}.{cls.__name__} is not registered as {role}, so a saved avatar could not load it: "
        "register it with ram_avatar.registry.register first"
    )


def _check_role(role: str) -> None:
    if role not in _CLASSES:
        raise ValueError(f"{role!r} is not a part of an avatar; the parts are {', '.join(ROLES)}")
