"""ram-avatar's Gradio app (also the Hugging Face Space entry): ``python app.py``.

Tabs: **Animate** (an avatar from the zoo + a motion file, a driving clip or an example motion ->
the avatar video, the template overlay and the MDA out-of-distribution plot), **Create** (a clip
-> tracking -> training -> a new avatar in the zoo; the job runs in a background thread, so it
finishes even when the browser tab is closed), **Live** (webcam frames in, avatar frames out)
and **Zoo** (avatars with their model cards; load from the Hub by id; push with a token).

Honours ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (Gradio reads them), ``HF_HUB_OFFLINE``
(huggingface_hub reads it), ``RAM_AVATAR_ZOO`` (folder of created / local avatars, default
``outputs/zoo``) and ``RAM_AVATAR_APP_OUTPUTS`` (rendered files, default ``outputs/app``; the
only folder the app serves files from). Torch and the models load on first use, not at start.

Errors reach the visitor as a sentence that says what to do, naming files by their upload name,
never a server path; the server log gets one line per visitor error, and a traceback only for
unexpected ones (see :func:`handler`).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
import gradio as gr

from ram_avatar.mda import DEFAULT_STRENGTH

ROOT = Path(__file__).resolve().parent
EXAMPLE_AVATARS = ROOT / "examples" / "avatars"
EXAMPLE_MOTIONS = ROOT / "examples" / "motions"
EXAMPLE_CLIP = ROOT / "examples" / "clips" / "dancer.mp4"  # Create's example: a synthetic (rendered) dancer
NO_EXAMPLE = "none"  # the example-motion choice that leaves the motion to an upload
ZOO = Path(os.environ.get("RAM_AVATAR_ZOO") or ROOT / "outputs" / "zoo").resolve()
OUTPUTS = Path(os.environ.get("RAM_AVATAR_APP_OUTPUTS") or ROOT / "outputs" / "app").resolve()
HUB_LIST = "hub_avatars.json"  # Hub ids loaded into the zoo (in ZOO)
MAX_UPLOAD = "200mb"
MOTION_TYPES = (".bvh", ".npz", ".json")
VIDEO_TYPES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v")
KEEP_RESULTS = 30  # rendered result folders kept on disk (oldest removed first)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
NAME = re.compile(r"^[A-Za-z0-9][\w-]{0,47}$")
# An absolute path (not a URL's): its last part is group 1.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`()<>,;:]+/)+([^\s/'\"`()<>,;:]+)")
# System fonts only: the default theme would fetch Google Fonts, and the app must work offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

_lock = threading.Lock()
_pipes: dict[str, object] = {}  # avatar key -> RamAvatarPipeline (the last few used)
_jobs: dict[str, dict] = {}  # create jobs by id
_live: dict[str, object] = {}  # session hash -> (avatar key, LiveSession)
logger = logging.getLogger("ram_avatar.app")


# ----------------------------------------------------------------------------- messages


def public_message(text: str, *files: str | os.PathLike) -> str:
    """``text`` fit to show a visitor: each of ``files`` named by its name (an upload's is the name
    it was uploaded under: Gradio keeps it as the last part of its temporary path), the app's own
    files by their path in the app, any other absolute path by its last part. Server paths mean
    nothing to a visitor and tell strangers about the server."""
    for path in files:
        text = text.replace(str(path), Path(path).name)
    return ABSOLUTE_PATH.sub(r"\1", text.replace(f"{ROOT}{os.sep}", ""))


def _unexpected(action: str, error: Exception) -> str:
    """What to tell the visitor when ``action`` failed on something that is not their input."""
    if isinstance(error, ModuleNotFoundError):
        return (f"{action} failed: this server's installation is incomplete (no module '{error.name}'; for the Space: its "
                "requirements.txt or its copy of ram_avatar/). Tell the app's owner; nothing you can change fixes it.")  # fmt: skip
    return (f"{action} failed on the server ({type(error).__name__}: {public_message(str(error))}). Try again; if it "
            "happens again, report it to the app's owner with this message.")  # fmt: skip


def _told(action: str, error: Exception) -> gr.Error:
    """The gr.Error the visitor sees for ``error``, logged once (call it inside ``except``)."""
    if isinstance(error, gr.Error):
        message = public_message(error.message)
        logger.info("%s: %s", action, message)
        return gr.Error(message, duration=error.duration, print_exception=False)
    logger.exception("%s failed", action)  # the one place a traceback is printed: a bug or a broken server
    return gr.Error(_unexpected(action, error), duration=None, print_exception=False)


def handler(action: str) -> Callable[[Callable], Callable]:
    """Decorate an event handler so that its errors are readable and logged once.

    A ``gr.Error`` (the visitor's to fix: a bad file, a missing input) logs one line, with no
    traceback. Any other exception logs its traceback and reaches the visitor as a ``gr.Error``
    saying what failed and what to do: Gradio would show only a bare "Error". ``action`` names
    the handler in both. Generators (streaming handlers) stay generators, as Gradio needs.
    """

    def decorate(fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def stream(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as error:  # noqa: BLE001 - told to the visitor and the log
                    raise _told(action, error) from None

            return stream

        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - told to the visitor and the log
                raise _told(action, error) from None

        return run

    return decorate


# ----------------------------------------------------------------------------- the zoo


def zoo_entries() -> list[tuple[str, str]]:
    """(name, key) of every avatar: bundled examples, local folders in ZOO, Hub ids loaded. The page
    and the API pick avatars by name (``"dancer-rt256 (example)"``); a key, a folder or a Hub id, is
    what loads it, and a folder's is a server path that visitors never see."""
    entries = []
    for folder, kind in [(EXAMPLE_AVATARS, "example"), (ZOO, "local")]:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if (path / "avatar.json").is_file():
                    entries.append((f"{path.name} ({kind})", str(path)))
    for repo_id in _hub_ids():
        entries.append((f"{repo_id} (Hub)", repo_id))
    return entries


def _hub_ids() -> list[str]:
    path = ZOO / HUB_LIST
    try:
        return [i for i in json.loads(path.read_text()) if HUB_ID.match(i)] if path.is_file() else []
    except ValueError:
        return []


def _remember_hub_id(repo_id: str) -> None:
    ids = _hub_ids()
    if repo_id not in ids:
        ZOO.mkdir(parents=True, exist_ok=True)
        tmp = ZOO / f".{HUB_LIST}.tmp"
        tmp.write_text(json.dumps(ids + [repo_id], indent=2))
        os.replace(tmp, ZOO / HUB_LIST)


def _check_key(name: str | None) -> str:
    """The key of the avatar named ``name``: only avatars listed in the zoo may be loaded, so a
    request cannot name an arbitrary path."""
    if not name:
        raise gr.Error("Pick an avatar first (the Zoo tab lists them; load one from the Hub there).")
    keys = dict(zoo_entries())
    if name not in keys:
        raise gr.Error(f"{name} is not in the zoo; refresh the list.")
    return keys[name]


def get_pipeline(key: str):
    """The loaded avatar, with its body template and renderer (cached: the last three used stay in memory)."""
    from ram_avatar.pipelines import RamAvatarPipeline

    with _lock:
        if key not in _pipes:
            try:
                pipe = RamAvatarPipeline.from_pretrained(key)
                pipe.template, pipe.renderer  # built on first use: now, while the visitor reads "loading the avatar"
            except (OSError, ValueError) as error:
                raise gr.Error(f"Could not load {key}: {error}") from None
            _pipes[key] = pipe
            while len(_pipes) > 3:
                _pipes.pop(next(iter(_pipes)))
        return _pipes[key]


def _card(key: str) -> str:
    """The avatar's model card (README.md without its YAML header), for display."""
    folder = Path(key)
    if not folder.is_dir():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(key, "README.md")
        folder = Path(cached).parent if isinstance(cached, str) else folder
    path = folder / "README.md"
    if not path.is_file():
        return f"*{key} has no model card.*"
    text = path.read_text(encoding="utf-8")
    if text.startswith("---"):
        end = text.find("\n---", 3)
        text = text[end + 4 :] if end > 0 else text
    return text


def _result_dir() -> Path:
    """A fresh folder for one request's outputs; old ones beyond KEEP_RESULTS are removed."""
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    olds = sorted((p for p in OUTPUTS.iterdir() if p.is_dir() and p.name.startswith("r-")), key=lambda p: p.stat().st_mtime)
    for old in olds[: max(0, len(olds) - KEEP_RESULTS + 1)]:
        shutil.rmtree(old, ignore_errors=True)
    folder = OUTPUTS / f"r-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


# ----------------------------------------------------------------------------- Animate


def example_motions() -> list[str]:
    return sorted(p.name for p in EXAMPLE_MOTIONS.glob("*") if p.suffix.lower() in MOTION_TYPES) if EXAMPLE_MOTIONS.is_dir() else []


def _motion_path(upload: str | None, example: str | None) -> Path:
    """The one motion chosen: an upload or an example (the page keeps them exclusive; API callers may not)."""
    example = None if example == NO_EXAMPLE else example
    if upload and example:
        raise gr.Error(f"Two motions are chosen, the file {Path(upload).name} and the example {example}: "
                       f"set the example to '{NO_EXAMPLE}' to use the file, or remove the file.")  # fmt: skip
    if upload:
        path = Path(upload)
        if path.suffix.lower() not in MOTION_TYPES + VIDEO_TYPES:
            raise gr.Error(f"{path.name}: not a motion file or a video. Give a BVH, AMASS / SMPL-X .npz / .json, or a clip ({', '.join(VIDEO_TYPES)}).")
        return path
    if example:
        if example not in example_motions():
            raise gr.Error(f"{example} is not one of the example motions.")
        return EXAMPLE_MOTIONS / example
    raise gr.Error("Give a motion: upload a motion file or a driving clip, or pick an example motion.")


def _motion_source(motion: Path) -> str:
    """How the summary names the motion used."""
    if motion.parent == EXAMPLE_MOTIONS:
        return f"the example motion `{motion.name}`"
    return f"your {'clip' if motion.suffix.lower() in VIDEO_TYPES else 'file'} `{motion.name}`"


@handler("Animate")
def animate(avatar: str, upload: str | None, example: str | None, strength: float, max_frames: float, progress=gr.Progress()):  # noqa: B008
    """Drive an avatar with a motion; returns the avatar video, the template overlay, the OOD plot, a summary."""
    from ram_avatar.pipelines.video import VideoWriter

    key, motion = _check_key(avatar), _motion_path(upload, example)
    progress(0, desc="loading the avatar")
    pipe = get_pipeline(key)
    is_clip = motion.suffix.lower() in VIDEO_TYPES
    progress(0, desc="tracking the clip (slow: every frame is fitted)" if is_clip else "loading the motion")
    try:
        driving = pipe.load_driving(motion, max_frames=int(max_frames), progress=False)
    except (OSError, ValueError) as error:
        message = public_message(str(error), motion)
        message = message if motion.name in message else f"{motion.name}: {message}"
        raise gr.Error(f"{message.rstrip('.')}. Fix or re-export the file, or pick an example motion.") from None
    out = _result_dir()
    log: dict[str, list] = {}
    T, start = driving.pose.batch_size, time.perf_counter()
    threads = 1 if pipe.device.type == "cpu" else None  # the encoders share the CPU with rendering

    rendered = 0

    def report(stage: str, done: int, total: int) -> None:
        """The pipeline's stages on the progress bar. MDA runs a chunk or two ahead of the frames,
        so it has the bar until the first frame is out; from then on, the frames have it."""
        nonlocal rendered
        if stage == "render":
            rendered = done
            progress((done, total), desc="rendering", unit="frames")
        elif stage == "mda" and not rendered:
            progress((done, total), desc="aligning the motion (MDA), rendering the first frames", unit="frames")

    with VideoWriter(out / "avatar.mp4", driving.fps, driving.audio_source, threads=threads) as video, \
            VideoWriter(out / "template.mp4", driving.fps, threads=threads) as overlay:  # fmt: skip
        for frame in pipe.stream(driving, float(strength), overlay=True, progress=False, mda_log=log, callback=report):
            video.write(frame.image)
            overlay.write(frame.template)
    seconds = time.perf_counter() - start
    plot = None
    summary = f"**{T} frames** of {_motion_source(motion)} at {driving.fps:g} fps, rendered in {seconds:.1f} s ({T / seconds:.1f} frames/s)."
    if log:
        import numpy as np

        from ram_avatar.pipelines import AnimationResult

        result = AnimationResult(driving.fps, T, ood_before=np.asarray(log["ood_before"]), ood_after=np.asarray(log["ood_after"]),
                                 change_deg=np.asarray(log["change_deg"]))  # fmt: skip
        plot = str(result.plot_ood(out / "ood.png", title=f"{motion.name}, MDA strength {strength:g}"))
        summary += f" MDA: median OOD score {np.median(result.ood_before):.2f} -> {np.median(result.ood_after):.2f}."
    else:
        summary += " This avatar has no MDA decoder: the motion is used as it is."
    return str(out / "avatar.mp4"), str(out / "template.mp4"), plot, summary


# ----------------------------------------------------------------------------- Create


def _run_job(job: dict) -> None:
    """Track, train and assemble in a background thread (survives the browser tab)."""
    from ram_avatar.pipelines.cli import create_avatar

    def hook(trainer) -> None:
        job["trainer"] = trainer
        job["stage"] = "training"

    try:
        job["stage"] = "tracking"
        create_avatar(job["clip"], str(ZOO / job["name"]), work=str(job["work"]), minutes=job["minutes"], steps=job["steps"],
                      max_frames=job["max_frames"], name=job["name"], progress=False,
                      trainer_hook=hook)  # fmt: skip
        job["stage"] = "done"
    except (OSError, ValueError) as error:  # the clip's problem (nobody in view, unreadable): the message says what to do
        job["stage"], job["error"] = "failed", public_message(str(error), job["clip"])
        logger.info("Create %s: %s", job["name"], job["error"])
    except Exception as error:  # noqa: BLE001 - shown to the visitor, the traceback to the log
        job["stage"], job["error"] = "failed", _unexpected("Create", error)
        logger.exception("Create %s failed", job["name"])


def _job_view(job: dict) -> tuple[str | None, str | None, str]:
    """(tracking preview video, training preview image, status text) served from OUTPUTS."""
    work, out = Path(job["work"]), Path(job["out"])
    preview = None
    for source in (work / "subject" / "preview.mp4",):
        if source.is_file():
            target = out / "tracking_preview.mp4"
            if not target.is_file():
                shutil.copyfile(source, target)
            preview = str(target)
    image = None
    train_preview = work / "train" / "preview.png"
    if train_preview.is_file():
        image = out / f"training_{int(train_preview.stat().st_mtime)}.png"
        if not image.is_file():
            shutil.copyfile(train_preview, image)
        image = str(image)
    status = f"**{job['name']}**: {job['stage']}"
    trainer = job.get("trainer")
    if trainer is not None and job["stage"] == "training":
        step, steps = trainer.state["step"], trainer.config.steps
        loss = (trainer.state.get("last_losses") or {}).get("loss/total")
        status += f", step {step} / {steps}" + (f", loss {loss:.4f}" if loss is not None else "")
        status += f" (stops after {job['minutes']:g} min of training)"
    if job["stage"] == "done":
        status += f": the avatar is in the zoo as `{job['name']} (local)`."
    if job.get("error"):
        status += f"\n\n{job['error']}"
    return preview, image, status


@handler("Create")
def create(clip: str | None, name: str, minutes: float, max_frames: float):
    """Start a create job and follow it; the job itself runs on when the page is closed."""
    if not clip:
        raise gr.Error("Upload a clip of one person (whole body in view, 30 s to a few minutes).")
    if Path(clip).suffix.lower() not in VIDEO_TYPES:
        raise gr.Error(f"{Path(clip).name} is not a video ({', '.join(VIDEO_TYPES)}).")
    name = (name or "").strip()
    if not NAME.match(name):
        raise gr.Error("Name the avatar with letters, digits, '-' or '_' (up to 48 characters).")
    if (ZOO / name).exists() or any(j["name"] == name and j["stage"] not in ("done", "failed") for j in _jobs.values()):
        raise gr.Error(f"An avatar named {name} exists or is being made; choose another name.")
    job_id = uuid.uuid4().hex[:8]
    out = _result_dir()
    work = ZOO / f".{name}.work"
    clip_copy = out / "clip" / Path(clip).name  # the upload cache may be cleaned while the job runs; the name is the upload's
    clip_copy.parent.mkdir()
    shutil.copyfile(clip, clip_copy)
    job = {"id": job_id, "name": name, "clip": str(clip_copy), "work": work, "out": out, "minutes": float(minutes),
           "steps": max(200, int(minutes * 60)), "max_frames": int(max_frames), "stage": "queued"}  # fmt: skip
    _jobs[job_id] = job
    threading.Thread(target=_run_job, args=(job,), daemon=True, name=f"create-{name}").start()
    while True:
        yield _job_view(job)
        if job["stage"] in ("done", "failed"):
            return
        time.sleep(2)


def jobs_table() -> str:
    if not _jobs:
        return "*No avatars are being made.*"
    return "\n".join(f"- {_job_view(j)[2].splitlines()[0]}" for j in _jobs.values())


# ----------------------------------------------------------------------------- Live


@handler("Live")
def live(frame, avatar: str, strength: float, request: gr.Request):
    """One webcam frame -> one avatar frame (None: keep showing the last one)."""
    if frame is None:
        return None
    from ram_avatar.pipelines.live import LiveSession

    key = _check_key(avatar)
    session_id = request.session_hash or "local"
    current = _live.get(session_id)
    if current is None or current[0] != key:
        if current is not None:
            current[1].close()
        current = _live[session_id] = (key, LiveSession(get_pipeline(key), mda_strength=float(strength)))
    session = current[1]
    session.mda_strength = float(strength)
    rendered = session(frame)
    return None if rendered is None else rendered.image


# ----------------------------------------------------------------------------- Zoo


def zoo_markdown() -> str:
    entries = zoo_entries()
    if not entries:
        return "*The zoo is empty: run `python scripts/make_example_avatar.py`, create an avatar, or load one from the Hub.*"
    return "\n".join(f"- **{name}**" + (f" — `{Path(key).relative_to(ROOT)}`" if Path(key).is_relative_to(ROOT) else "")
                     for name, key in entries)  # fmt: skip


@handler("Loading from the Hub")
def load_from_hub(repo_id: str):
    repo_id = (repo_id or "").strip()
    if not HUB_ID.match(repo_id):
        raise gr.Error("A Hub id looks like owner/name.")
    from ram_avatar.pipelines import RamAvatarPipeline

    try:
        pipe = RamAvatarPipeline.from_pretrained(repo_id)
    except (OSError, ValueError) as error:
        raise gr.Error(f"Could not load {repo_id}: {error}") from None
    with _lock:
        _pipes[repo_id] = pipe
    _remember_hub_id(repo_id)
    return _refresh(f"{repo_id} (Hub)") + (f"Loaded **{repo_id}** into the zoo.",)


@handler("Push")
def push(avatar: str, repo_id: str, token: str, private: bool) -> str:
    key = _check_key(avatar)
    repo_id = (repo_id or "").strip()
    if not HUB_ID.match(repo_id):
        raise gr.Error("A Hub id looks like owner/name.")
    if not token:
        raise gr.Error("Pushing needs a Hub token with write access (huggingface.co/settings/tokens).")
    try:
        commit = get_pipeline(key).push_to_hub(repo_id, token=token, private=bool(private) or None)
    except Exception as error:  # noqa: BLE001 - any Hub error is the user's to read
        raise gr.Error(f"Push failed: {error}") from None
    return f"Pushed to {commit.commit_url}. Only push avatars of people who agreed to it."


@handler("Zoo")
def card(name: str | None) -> str:
    """The Zoo tab's model card of the avatar picked."""
    return _card(_check_key(name)) if name else ""


def _refresh(selected: str | None = None):
    names = [name for name, _ in zoo_entries()]
    value = selected if selected in names else (names[0] if names else None)
    update = gr.update(choices=names, value=value)
    return update, update, update, update, zoo_markdown()


# ----------------------------------------------------------------------------- the page


def build_app() -> gr.Blocks:
    entries = zoo_entries()
    names = [name for name, _ in entries]
    first = names[0] if names else None
    motions = example_motions()
    with gr.Blocks(title="ram-avatar", analytics_enabled=False) as demo:
        gr.Markdown("# ram-avatar\nReal-time full-body avatars from one video (RAM-Avatar, CVPR 2024). "
                    "Only make or share avatars of people who agreed to it.")  # fmt: skip
        with gr.Tab("Animate"):
            with gr.Row():
                avatar_a = gr.Dropdown(names, value=first, label="Avatar", scale=3)
                refresh = gr.Button("Refresh zoo", scale=1)
            with gr.Row():
                upload = gr.File(label="Motion file (BVH, AMASS / SMPL-X .npz / .json) or driving clip",
                                 file_types=list(MOTION_TYPES + VIDEO_TYPES), type="filepath")  # fmt: skip
                with gr.Column():
                    example = gr.Dropdown([NO_EXAMPLE] + motions, value=motions[0] if motions else NO_EXAMPLE,
                                          label=f"...or an example motion ('{NO_EXAMPLE}': the file)")  # fmt: skip
                    strength = gr.Slider(0, 1, value=DEFAULT_STRENGTH, step=0.05, label="MDA strength (0 = the motion as it is; more pulls poses far outside the avatar's range further in)")
                    max_frames = gr.Slider(10, 900, value=150, step=10, label="Frames (at most)")
                    go = gr.Button("Animate", variant="primary")
            with gr.Row():
                video = gr.Video(label="Avatar", interactive=False, autoplay=True, loop=True, height=380)
                overlay = gr.Video(label="Template overlay", interactive=False, autoplay=True, loop=True, height=380)
                plot = gr.Image(label="MDA: out-of-distribution score", type="filepath", interactive=False, height=380)
            summary = gr.Markdown()
            go.click(animate, [avatar_a, upload, example, strength, max_frames], [video, overlay, plot, summary], api_name="animate")
            # One motion at a time: uploading sets the example to "none", picking an example removes the upload.
            upload.upload(lambda: NO_EXAMPLE, None, example, api_visibility="private")
            example.input(lambda choice: gr.update() if choice == NO_EXAMPLE else None, example, upload, api_visibility="private")
        with gr.Tab("Create"):
            gr.Markdown("Upload a clip of **one person who agreed to it**, whole body in view. It is tracked, an avatar is "
                        "trained for the minutes you choose, and it appears in the zoo. The job keeps running if you close this page.")  # fmt: skip
            with gr.Row():
                clip = gr.File(label="Clip", file_types=list(VIDEO_TYPES), type="filepath")
                with gr.Column():
                    name = gr.Textbox(label="Avatar name", value="my-avatar")
                    minutes = gr.Slider(1, 120, value=10, step=1, label="Training minutes")
                    frames = gr.Slider(30, 1800, value=300, step=10, label="Frames tracked (at most)")
                    start = gr.Button("Create", variant="primary")
            if EXAMPLE_CLIP.is_file():
                gr.Examples([[str(EXAMPLE_CLIP), "dancer"]], [clip, name], label="Example clip: a synthetic (rendered) dancer")
            with gr.Row():
                track_preview = gr.Video(label="Tracking preview (keypoints | fitted template)", interactive=False)
                train_preview = gr.Image(label="Training preview (GT | avatar | error)", type="filepath", interactive=False)
            status = gr.Markdown()
            jobs = gr.Markdown(jobs_table())
            gr.Button("Refresh jobs").click(jobs_table, None, jobs, api_name="jobs")
            start.click(create, [clip, name, minutes, frames], [track_preview, train_preview, status], api_name="create")
        with gr.Tab("Live"):
            gr.Markdown("Webcam in, avatar out, frame by frame: each frame is detected, fitted and rendered on this machine.")
            with gr.Row():
                avatar_l = gr.Dropdown(names, value=first, label="Avatar")
                strength_l = gr.Slider(0, 1, value=DEFAULT_STRENGTH, step=0.05, label="MDA strength")
            with gr.Row():
                webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera")
                live_out = gr.Image(label="Avatar", type="numpy", interactive=False)
            webcam.stream(live, [webcam, avatar_l, strength_l], live_out, stream_every=0.5, concurrency_limit=1, api_name="live")
        with gr.Tab("Zoo"):
            listing = gr.Markdown(zoo_markdown())
            with gr.Row():
                avatar_z = gr.Dropdown(names, value=first, label="Avatar", scale=3)
                refresh_z = gr.Button("Refresh", scale=1)
            card_view = gr.Markdown(_card(entries[0][1]) if entries else "")
            avatar_z.change(card, avatar_z, card_view, api_name="card")
            with gr.Accordion("Load from the Hugging Face Hub", open=False):
                hub_id = gr.Textbox(label="Hub id (owner/name)")
                load = gr.Button("Load")
            with gr.Accordion("Push to the Hugging Face Hub", open=False):
                avatar_p = gr.Dropdown(names, value=first, label="Avatar")
                repo = gr.Textbox(label="Hub id to push to (owner/name)")
                token = gr.Textbox(label="Hub token (write)", type="password")
                private = gr.Checkbox(label="Private repository", value=True)
                push_button = gr.Button("Push")
            message = gr.Markdown()
            dropdowns = [avatar_a, avatar_l, avatar_z, avatar_p, listing]
            load.click(load_from_hub, hub_id, dropdowns + [message], api_name="load_from_hub")
            push_button.click(push, [avatar_p, repo, token, private], message, api_name="push")
            for button in (refresh, refresh_z):
                button.click(_refresh, avatar_a, dropdowns, api_name=False)
    return demo


def launch(**kwargs) -> tuple:
    """Build and launch; ``kwargs`` go to ``Blocks.launch`` (e.g. ``prevent_thread_lock=True``)."""
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    from ram_avatar.device import keep_freed_memory

    keep_freed_memory()  # fewer page faults while rendering (see there)
    demo = build_app()
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo, demo.launch(allowed_paths=[str(OUTPUTS)], max_file_size=MAX_UPLOAD, theme=THEME, ssr_mode=False,
                             footer_links=["api", "settings"], **kwargs)  # fmt: skip


if __name__ == "__main__":
    # The app's own lines (ram_avatar.*) at INFO; other libraries' only from WARNING (httpx logs every request at INFO).
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("ram_avatar").setLevel(logging.INFO)
    launch()
