"""Model cards of avatars, and pushing a trained avatar to the Hugging Face Hub.

A trained network's card is ``model_cards/avatar.md`` (a Jinja template) rendered by
``huggingface_hub.ModelCard`` with the run's facts: subject data, body template, config, training
steps, held-out metrics (whole frame and person only), intended use, consent and deep-fake warning
(a variant for synthetic subjects), and a usage snippet that runs as written. A whole avatar
folder's cards are rebuilt from it (:func:`folder_card`, :func:`folder_network_card`).

Every card's metadata is a ``ModelCardData`` in the Hub's conventions (:func:`card_data`):
``library_name: ram-avatar`` (how the Hub and the app's Zoo find avatars), tags, licence, and the
held-out metrics as ``model-index`` evaluation results on the subject's clip, which the Hub shows
on the model's page. Cards are read with ``huggingface_hub.ModelCard`` (:func:`parse_card`,
:func:`load_card`), which say clearly when a card's front matter is broken.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml  # huggingface_hub's card parser: its errors are what a broken front matter raises
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ram_avatar.atomic import staged_folder

if TYPE_CHECKING:  # annotations only: reading cards needs no torch
    import numpy as np
    import torch

    from ram_avatar.pipelines import RamAvatarPipeline

CARD_TEMPLATE = Path(__file__).resolve().parents[2] / "model_cards" / "avatar.md"
UPLOAD_PATTERNS = ["*.safetensors", "*.json", "README.md", "preview.png"]  # weights, config, card, picture: no pickles
LIBRARY = "ram-avatar"  # the cards' library_name: the Hub lists avatars by it (the Zoo's search)
TAGS = ["ram-avatar", "avatar", "human-avatar", "full-body", "neural-rendering"]
# An avatar shows a person: whether and how it may be shared is theirs to say (the card's consent
# section), which no standard licence expresses. A card whose licence was set otherwise keeps it.
LICENSE = "other"
# The model-index task: the network renders an image of the person from images of the posed body
# template, scored on held-out frames of the subject's own clip (the dataset, named by the clip).
TASK = {
    "task_type": "image-to-image",
    "task_name": "Rendering held-out frames of the subject's video",
    "dataset_type": "ram-avatar-subject",
    "dataset_split": "held-out",
}
METRIC_TYPES = {"lpips_alex": "lpips", "lpips_vgg": "lpips"}  # metrics.json key -> metric id (default: the key)
PREVIEW_CAPTION = "Held-out frames, never trained on: ground truth | avatar, on white"


class CardError(ValueError):
    """A model card whose front matter (its YAML header) cannot be read."""


INTRO = """A **ram-avatar** network (RAM-Avatar, CVPR 2024): a real-time, full-body controllable avatar
trained from one monocular video with the `ram-avatar` package. It renders the person of that video
in any body, hand and face pose given as SMPL-X-layout parameters."""
CONSENT = {
    False: """This model reproduces a real person's appearance. It may only be shared with that person's
informed consent and used for what they agreed to, and must never be used to impersonate, deceive,
harass or defame anyone, or to make sexual or otherwise degrading content. Label what it renders as
synthetic. If you are the person shown and did not consent, ask the repository owner (or Hugging
Face) to take it down.""",
    True: """This avatar was made from a video of a *synthetic* person (rendered by a computer, not filmed):
it reproduces no real person's appearance. Still label what it renders as synthetic, and never use
it to deceive. The same tools make avatars of real people: build and share those only with the
person's informed consent.""",
}
METRIC_NAMES = {
    "psnr": "PSNR (dB, higher is better)",
    "ssim": "SSIM (higher is better)",
    "lpips_alex": "LPIPS, AlexNet (lower is better)",
    "lpips_vgg": "LPIPS, VGG (lower is better)",
}
MASKED = "_masked"  # the suffix of a metric computed over the person's pixels only
CONSENT_HEADING, USE_HEADING = "Consent and deep-fake warning", "Use"  # sections a whole avatar's cards replace


def _number(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_table(held_out: dict[str, Any]) -> str:
    """Markdown table of held-out metrics, one row per metric with its whole-frame value and its
    person-only value (the key with ``_masked``), whichever keys there are ("n/a" where one is missing)."""
    rows: dict[str, dict[bool, Any]] = {}
    for key, value in held_out.items():
        masked = key.endswith(MASKED)
        rows.setdefault(key.removesuffix(MASKED), {})[masked] = value
    lines = ["| metric | whole frame | person only (masked) |", "|---|---|---|"]
    for name, values in rows.items():
        lines.append(f"| {METRIC_NAMES.get(name, name)} | {_number(values.get(False))} | {_number(values.get(True))} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- metadata


def eval_results(held_out: dict[str, Any], clip: str) -> list[EvalResult]:
    """The held-out metrics as the Hub's ``model-index`` results on the clip ``clip``: one per
    metric with a finite value, of type ``psnr`` / ``ssim`` / ``lpips`` (else the key), named as
    in the card's table (person-only ones say so), with the ``metrics.json`` key as its config."""
    results = []
    for key, value in held_out.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue  # not measured (None), or a failed measure: the Hub takes numbers only
        base = key.removesuffix(MASKED)
        name, paren, unit = METRIC_NAMES.get(base, base).partition(" (")  # "PSNR", " (", "dB, higher is better)"
        name = f"{name}, person only{paren}{unit}" if key.endswith(MASKED) else f"{name}{paren}{unit}"
        metric = {"metric_type": METRIC_TYPES.get(base, base), "metric_name": name, "metric_config": key}
        results.append(EvalResult(**TASK, dataset_name=clip, **metric, metric_value=float(value)))
    return results


def card_data(base: ModelCardData | None, name: str, clip: str, held_out: dict[str, Any] | None) -> ModelCardData:
    """An avatar card's metadata: ``base``'s (a class's or an earlier card's: its licence and
    other fields are kept) with ram-avatar's library name and tags, the licence :data:`LICENSE`
    where it has none, and the held-out metrics as evaluation results of the model ``name`` on
    the subject's clip ``clip`` (``base``'s results when there are no metrics)."""
    fields = base.to_dict() if base is not None else {}
    results = eval_results(held_out, clip) if held_out else base.eval_results if base is not None else None
    for key in ("model-index", "model_name", "library_name"):
        fields.pop(key, None)
    fields["license"] = fields.get("license") or LICENSE
    fields["tags"] = sorted({*(fields.get("tags") or []), *TAGS})
    if not results:  # no model-index, and so no name for it
        return ModelCardData(**fields, library_name=LIBRARY)
    return ModelCardData(**fields, library_name=LIBRARY, model_name=name, eval_results=results)


def _checked(card: ModelCard, name: str) -> ModelCard:
    """``card`` unless its text still opens a front matter: one the parser did not find closed."""
    if card.text.lstrip().startswith("---"):
        raise CardError(
            f"{name} opens a front matter (its YAML header) with `---` but has no closing `---` line: "
            "add one after the YAML, or regenerate the card."
        )
    return card


def _unreadable(error: Exception, name: str) -> CardError:
    """The :class:`CardError` for the parser's ``error`` on ``name``'s front matter."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 2} of the file)" if mark is not None else ""  # +1: from 1, +1: the opening ---
    # PyYAML's problem, or huggingface_hub's message without its advice to ignore the error
    what = getattr(error, "problem", None) or str(error).split(". Pass `ignore_metadata_errors")[0]
    return CardError(
        f"{name}'s front matter (the YAML between the `---` lines at its top) is not valid: "
        f"{what}{where}; fix it, or regenerate the card."
    )


def parse_card(text: str, name: str = "README.md") -> ModelCard:
    """The ``ModelCard`` of the Markdown ``text`` (the file ``name``, for messages); a
    :class:`CardError` when its front matter is not valid or not closed."""
    try:
        card = ModelCard(text)
    except (yaml.YAMLError, ValueError) as error:
        raise _unreadable(error, name) from None
    return _checked(card, name)


def load_card(path: str | os.PathLike) -> ModelCard:
    """``ModelCard.load`` of the card file ``path``; a :class:`CardError` (naming the file by its
    name) when its front matter is not valid or not closed."""
    name = Path(path).name
    try:
        card = ModelCard.load(Path(path))
    except (yaml.YAMLError, ValueError) as error:
        raise _unreadable(error, name) from None
    return _checked(card, name)


# ----------------------------------------------------------------------------- cards


def network_usage(
    model_id: str, model_class: str, template: str, shape: list[float], image_size: tuple[int, int]
) -> str:
    """The card's "Use" section for a network on its own: one frame rendered, runnable as written
    where ``model_id`` (a folder or Hub id) holds the network."""
    values = ", ".join(f"{v:.4f}" for v in shape)
    return f"""```python
import torch

from ram_avatar.body import SmplxPose, load_template
from ram_avatar.models import {model_class}
from ram_avatar.render import Camera

avatar = {model_class}.from_pretrained({json.dumps(model_id)})   # model.safetensors only (no pickles)
template = load_template("{template}")
shape = torch.tensor([[{values}]])   # the subject's body shape, as tracked
pose = SmplxPose.zeros(1)   # one frame in the SMPL-X layout (here the T-pose): set its joints to drive it
camera = Camera.framing(template(pose, shape).vertices, image_size={tuple(image_size)})   # a front camera on the body
with torch.no_grad():
    out = avatar(avatar.prepare_inputs(template, pose, camera, shape=shape))
rgb, alpha = out["rgb"], out["alpha"]   # (1, 3 | 1, H, W) in [0, 1]
```"""


def rebuild_card(card: str, title: str, intro: str, first: dict[str, str], data: ModelCardData) -> str:
    """``card`` with the metadata ``data``, a new title and intro, the sections ``first`` (heading
    -> text) first, then its other ``## `` sections as they are (``first`` replaces those of the
    same heading); what came before its first section (title, intro) is left out."""
    _, *parts = parse_card(card).text.split("\n## ") if card else [""]
    sections = dict(part.split("\n", 1) if "\n" in part else (part, "") for part in parts)
    kept = {heading: text for heading, text in sections.items() if heading not in first}
    sections = {**{heading: f"\n{text.strip()}\n" for heading, text in first.items()}, **kept}
    body = "".join(f"\n## {heading}\n{text.rstrip()}\n" for heading, text in sections.items())
    return f"---\n{data.to_yaml()}\n---\n\n# {title}\n\n{intro.strip()}\n{body}"


def _folder_data(pipe: RamAvatarPipeline) -> ModelCardData:
    """A whole avatar's card metadata: its network card's (licence kept), its name, its clip, and
    the held-out metrics of its ``metrics.json`` (so folders saved before cards had them get them)."""
    card = pipe.avatar_files.get("README.md", b"").decode("utf-8")
    metrics = json.loads(pipe.avatar_files["metrics.json"]) if "metrics.json" in pipe.avatar_files else {}
    base = parse_card(card, "avatar/README.md").data if card else None
    return card_data(base, pipe.name, str(pipe.source.get("video") or pipe.name), metrics.get("held_out"))


def folder_card(pipe: RamAvatarPipeline, where: str) -> str:
    """A whole avatar folder's README.md, for the folder or Hub repo ``where`` (its snippets load
    from there): the avatar's name as title, what the folder holds, consent (the synthetic-subject
    variant when ``source["synthetic"]``), how to drive it, then the network card's facts
    (training data, training, held-out metrics, intended use)."""
    parts = ["the network (`avatar/`)", "its body and framing (`avatar.json`)"]
    if pipe.has_mda:
        parts.append("Motion Distribution Align (`pose_decoder/` + `pose_prior/`)")
    if pipe.face_rig is not None:
        parts.append("a face rig (`face_rig.safetensors`)")
    intro = (
        "A whole **ram-avatar** avatar (RAM-Avatar, CVPR 2024), driven in real time by any body, hand and face "
        f"motion: a BVH, AMASS or SMPL-X file, or a video of someone moving. It holds {', '.join(parts[:-1])} and "
        f"{parts[-1]}: only JSON, safetensors, Markdown and a PNG picture."
    )
    if "preview.png" in pipe.avatar_files:
        intro += f"\n\n![{PREVIEW_CAPTION}](avatar/preview.png)\n\n*{PREVIEW_CAPTION}.*"
    usage = (
        f"```bash\nram-avatar animate {shlex.quote(where)} MOTION out.mp4   "
        "# MOTION: a BVH, AMASS / SMPL-X .npz / .json file, or a video\n```\n\n"
        "```python\nfrom ram_avatar.demo import wave_motion\nfrom ram_avatar.motion import Motion\n"
        "from ram_avatar.pipelines import RamAvatarPipeline\n\n"
        f"pipe = RamAvatarPipeline.from_pretrained({json.dumps(where)})\n"
        'motion = Motion(wave_motion(30), fps=30.0, name="wave", source="ram_avatar.demo")   '
        "# or a motion file or video, as above\n"
        'result = pipe(motion, out="wave.mp4")   # pipe.stream(motion) yields the frames as they render\n```'
    )
    card = pipe.avatar_files.get("README.md", b"").decode("utf-8")
    first = {CONSENT_HEADING: CONSENT[pipe.synthetic], USE_HEADING: usage}
    return rebuild_card(card, pipe.name, intro, first, _folder_data(pipe))


def folder_network_card(pipe: RamAvatarPipeline, where: str) -> str:
    """The network's own card (``avatar/README.md``, when it came with one) inside the folder or
    Hub repo ``where``: its training facts kept; its title, consent and usage those of the
    avatar, through which the network gets its body and camera."""
    usage = (
        f"This network renders the avatar `{where}`, which gives it its body shape and camera (the avatar's "
        "README.md shows how to drive it). Load it with the avatar:\n\n```python\n"
        "from ram_avatar.pipelines import RamAvatarPipeline\n\n"
        f"pipe = RamAvatarPipeline.from_pretrained({json.dumps(where)})\n"
        "avatar = pipe.avatar   # this network; pipe.template, pipe.shape and pipe.framing: its body and framing\n```"
    )
    card = pipe.avatar_files["README.md"].decode("utf-8")
    first = {CONSENT_HEADING: CONSENT[pipe.synthetic], USE_HEADING: usage}
    return rebuild_card(card, f"{pipe.name}: the network", INTRO, first, _folder_data(pipe))


def avatar_card(  # noqa: ANN201
    model: torch.nn.Module,
    model_config: dict[str, Any],
    subject,  # noqa: ANN001 - a SubjectDataset, or anything with its attributes
    config,  # noqa: ANN001 - a TrainConfig
    metrics: dict[str, Any],
    model_id: str,
    *,
    name: str | None = None,
    synthetic: bool = False,
):
    """The ``huggingface_hub.ModelCard`` of a trained avatar network (see ``model_cards/avatar.md``).

    ``model_config``: the network's ``config.json``; ``model_id``: where the card lives, a folder
    or Hub id (its usage loads the network from there); ``name``: the title (default: the
    subject dataset's name); ``synthetic``: the subject is a rendered, synthetic person (the
    consent text says so).
    """
    if not CARD_TEMPLATE.is_file():
        raise FileNotFoundError(
            f"the model card template {CARD_TEMPLATE.name} is missing: reinstall ram-avatar from its repository"
        )
    subject_name = Path(str(metrics["subject"])).name
    title = name or subject_name
    # The class's own metadata (library, tags), by the Hub mixin's public card.
    data = card_data(model.generate_model_card().data, title, subject.source_video, metrics["held_out"])
    model_class, shape = type(model).__name__, [float(v) for v in subject.shape]
    return ModelCard.from_template(
        card_data=data,
        template_path=str(CARD_TEMPLATE),
        title=title,
        intro=INTRO,
        consent=CONSENT[synthetic],
        usage=network_usage(model_id, model_class, subject.template.name, shape, subject.image_size),
        model_class=model_class,
        subject_name=subject_name,
        source_video=subject.source_video,
        source_size="x".join(str(s) for s in reversed(subject.source_size)),
        num_frames=subject.num_frames,
        image_size="x".join(str(s) for s in reversed(subject.image_size)),
        fps=f"{subject.fps:g}",
        train_frames=metrics["train_frames"],
        held_out_count=len(metrics["held_out_frames"]),
        held_out_every=config.held_out_every,
        template=subject.template.name,
        shape_space=subject.template.shape_space,
        config_name=f"{config.config}{', baseline U-Net' if config.baseline else ''}",
        steps=metrics["steps"],
        batch_size=config.batch_size,
        train_minutes=f"{metrics['train_minutes']:.1f}",
        device=metrics["device"],
        losses=loss_mix(config),
        augmentation=augmentation(config),
        lr=config.lr,
        grad_clip=config.grad_clip,
        ema_decay=config.ema_decay,
        model_config=json.dumps(model_config, indent=2),
        background=config.background,
        metrics_table=metrics_table(metrics["held_out"] or {}),
    )


def augmentation(config) -> str:  # noqa: ANN001 - a TrainConfig
    """How a run varied its training items, e.g. ``random background colours; camera jitter: ...``."""
    parts = ["random background colours"] if config.random_background else []
    jitter = [
        (config.camera_zoom, f"zoom up to {1 + config.camera_zoom:g}x either way"),
        (config.camera_roll, f"roll up to {config.camera_roll:g} degrees"),
        (config.camera_shift, f"shift up to {100 * config.camera_shift:g}% of the frame"),
    ]
    jitter = [text for value, text in jitter if value > 0]
    if jitter:
        parts.append(f"camera jitter ({', '.join(jitter)})")
    return "; ".join(parts) or "none"


def loss_mix(config) -> str:  # noqa: ANN001 - a TrainConfig
    """The loss terms a run trained with and their weights, e.g. ``L1 1, alpha 10``."""
    terms = [
        ("L1", config.l1),
        ("alpha" if config.alpha_loss == "l1" else f"alpha ({config.alpha_loss.upper()})", config.alpha),
        ("VGG16 perceptual", config.perceptual),
        ("hand perceptual", config.hand_perceptual),
        ("temporal GAN (non-saturating)", config.gan),
    ]
    return ", ".join(f"{name} {weight:g}" for name, weight in terms if weight > 0)


def save_avatar(
    model: torch.nn.Module,
    folder: str | os.PathLike,
    subject,  # noqa: ANN001 - a SubjectDataset
    config,  # noqa: ANN001 - a TrainConfig
    metrics: dict[str, Any],
    repo_id: str | None = None,
    preview: np.ndarray | None = None,
) -> Path:
    """``model.save_pretrained(folder)`` (config.json + model.safetensors) plus README.md (the card,
    whose usage names ``repo_id`` when it will be pushed there, else ``folder``) and metrics.json,
    written in a staging folder and renamed into place; ``preview`` (H, W, 3) uint8, when given,
    goes in as preview.png (held-out frames: ground truth | avatar, on white)."""
    folder = Path(folder)
    with staged_folder(folder) as staging:
        model.save_pretrained(staging)  # config.json, weights and a generic README.md, replaced by the card
        model_config = json.loads((staging / "config.json").read_text(encoding="utf-8"))
        card = avatar_card(model, model_config, subject, config, metrics, repo_id or folder.as_posix())
        card.save(staging / "README.md")
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        if preview is not None:
            import imageio.v3 as iio

            iio.imwrite(staging / "preview.png", preview, plugin="pillow")
    return folder


def push_avatar(  # noqa: ANN201
    folder: str | os.PathLike, repo_id: str, *, private: bool | None = None, token: str | None = None
):
    """Upload a saved avatar folder (weights, config, card, metrics) to the Hub model repo ``repo_id``.

    Only ``*.safetensors``, ``*.json`` and ``README.md`` are uploaded. Returns the commit info.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved avatar (model.safetensors + config.json): train one first")
    api = HfApi(token=token)
    repo = api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo.repo_id,
        folder_path=str(folder),
        repo_type="model",
        allow_patterns=UPLOAD_PATTERNS,
        commit_message="Upload ram-avatar avatar",
    )
