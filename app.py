"""ram-avatar's Gradio app (also the Hugging Face Space entry): ``python app.py``.

Tabs: **Animate** (an avatar from the zoo + a motion file, a driving clip or an example motion ->
the avatar video, the template overlay and the MDA out-of-distribution plot), **Create** (a clip
-> tracking -> training -> a new avatar in the zoo; the job runs in a background thread, so it
finishes even when the browser tab is closed), **Live** (webcam frames in, avatar frames out)
and **Zoo** (the avatars here and the ram-avatar avatars on the Hub, found by their cards'
``library_name``, with their model cards; choose a Hub avatar, or give its id, to load it; push
with a token). Without the Hub (offline, ``HF_HUB_OFFLINE=1``) the Zoo says it is unreachable and
lists the avatars here.

Honours ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (Gradio reads them), ``HF_HUB_OFFLINE``
and ``HF_ENDPOINT`` (huggingface_hub reads them), ``RAM_AVATAR_ZOO`` (folder of created / local avatars, default
``outputs/zoo``) and ``RAM_AVATAR_APP_OUTPUTS`` (rendered files, default ``outputs/app``; the
only folder the app serves files from). Torch and the models load on first use, not at start.

Errors reach the visitor as a sentence that says what to do, naming files by their upload name,
never a server path; the server log gets one line per visitor error, and a traceback only for
unexpected ones (see :func:`handler`). API clients are held to the same rules as the page:
each input's form is checked before Gradio reads it (:class:`StrictBlocks`), numbers against the
sliders' ranges, files must be uploads, and uploads are checked against
:mod:`ram_avatar.limits` before they are parsed. Disk use is bounded too: rendered results by age, count and total size
(:func:`prune_outputs`, at start and with each request), Gradio's cache (uploads, the copies of
results it serves) by age (its ``delete_cache``).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import numbers
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from stat import S_ISREG
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no calls home
import gradio as gr
from gradio.utils import get_upload_folder

from ram_avatar.limits import LimitError, check_limit
from ram_avatar.mda import DEFAULT_STRENGTH
from ram_avatar.zoo import card_markdown, hub_markdown, list_hub_avatars, local_avatars

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
KEEP_RESULTS = 30  # rendered result folders kept on disk (oldest removed first) ...
RESULT_HOURS = 24.0  # ... for at most this long ...
RESULTS_MB = 2048.0  # ... and at most this much in all (a create job's folder holds its clip)
# Seconds between the webcam frames the page sends. Measured with Chromium's fake camera on this machine's 2 cores
# (browser included): 0.5 / 0.2 / 0.1 / 0.075 / 0.05 s -> 2 / 5 / 9 / 9.7 / 9 avatar frames a second, the loop's
# latency 70 ms up to 0.1 s (a frame sent is 100 ms old, median), ~200 ms below it (the cores are then saturated).
LIVE_EVERY = 0.1
LIVE_FPS_NOTE = "about 9 avatar frames per second on 2 CPU cores"
LIVE_LOOPS = 4  # browser sessions with a live loop (a detector, two threads) at once; a new one ends the oldest
CACHE_CHECK_S, CACHE_AGE_S = 3600, 6 * 3600  # Gradio's cache: its files older than 6 h are removed, hourly
# The sliders' ranges, also enforced on API calls: (min, max).
STRENGTH = (0.0, 1.0)
ANIMATE_FRAMES = (10, 900)
DRIVING_SECONDS = 60.0  # a driving clip is tracked whole (then cached): at most this long in the app
CREATE_MINUTES = (1, 120)
CREATE_FRAMES = (30, 1800)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
NAME = re.compile(r"^[A-Za-z0-9][\w-]{0,47}$")
# An absolute path (not a URL's): its last part is group 1.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`()<>,;:]+/)+([^\s/'\"`()<>,;:]+)")
# System fonts only: the default theme would fetch Google Fonts, and the app must work offline.
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])

_lock = threading.Lock()
_pipes: dict[str, object] = {}  # avatar key -> RamAvatarPipeline (the last few used)
_jobs: dict[str, dict] = {}  # create jobs by id
_live: dict[str, _LiveTab] = {}  # session hash -> its Live tab
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
        return (
            f"{action} failed: this server's installation is incomplete (no module '{error.name}'; for the Space: its "
            "requirements.txt or its copy of ram_avatar/). Tell the app's owner; nothing you can change fixes it."
        )
    return (
        f"{action} failed on the server ({type(error).__name__}: {public_message(str(error))}). Try again; if it "
        "happens again, report it to the app's owner with this message."
    )


def _told(action: str, error: Exception) -> gr.Error:
    """The gr.Error the visitor sees for ``error``, logged once (call it inside ``except``). A
    LimitError is the visitor's too: an input over a documented bound, which its message names."""
    if isinstance(error, LimitError):
        error = gr.Error(str(error))
    if isinstance(error, gr.Error):
        message = public_message(error.message)
        logger.info("%s: %s", action, message)
        return gr.Error(message, duration=error.duration, print_exception=False)
    logger.exception("%s failed", action)  # the one place a traceback is printed: a bug or a broken server
    return gr.Error(_unexpected(action, error), duration=None, print_exception=False)


def handler(action: str) -> Callable[[Callable], Callable]:
    """Decorate an event handler so that its errors are readable and logged once.

    A ``gr.Error`` or a ``LimitError`` (the visitor's to fix: a bad file, a missing input, a file
    over the limits) logs one line, with no traceback. Any other exception logs its traceback and
    reaches the visitor as a ``gr.Error`` saying what failed and what to do: Gradio would show
    only a bare "Error". ``action`` names the handler in both. Generators (streaming handlers)
    stay generators, as Gradio needs.
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


# ----------------------------------------------------------------------------- inputs


def _shown(value: object) -> str:
    """``value`` as a message quotes it: short."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _out_of_range(value: object, name: str, bounds: tuple[float, float]) -> str | None:
    """Why ``value`` is not a number within ``bounds`` (None when it is)."""
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:  # NaN fails too
        return f"{name} must be a number from {low:g} to {high:g}, not {_shown(value)}."
    return None


def _number(value: object, name: str, bounds: tuple[float, float]) -> float:
    """``value`` as a float, or a gr.Error when it is not a number within ``bounds``: the page's
    sliders keep to their range, an API caller may send anything."""
    problem = _out_of_range(value, name, bounds)
    if problem:
        raise gr.Error(problem)
    return float(value)  # type: ignore[arg-type] - a number, checked above


def _text(value: object) -> str:
    """A text input, stripped ("" for None or anything that is not text)."""
    return value.strip() if isinstance(value, str) else ""


def _is_upload(path: str) -> bool:
    """Whether ``path`` lies in Gradio's upload folder: the only files a request may name."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(get_upload_folder()))
    except (OSError, ValueError):  # a path no file can have (a NUL byte, too long)
        return False


def _malformed(component: gr.components.Component, value: Any, name: str) -> str | None:
    """Why ``value``, an input as sent, cannot be read by ``component`` (None when it can);
    ``name`` names the input (its API parameter)."""
    if isinstance(component, gr.File):
        path = value.get("path") if isinstance(value, dict) else None
        if value is None or (isinstance(path, str) and _is_upload(path)):
            return None
        return (
            f"{name}: send the file itself (with gradio_client: handle_file('my_motion.bvh')); this app "
            "reads only files uploaded to it, not a path or URL."
        )
    if isinstance(component, gr.Slider):
        return _out_of_range(value, name, (component.minimum, component.maximum))
    if isinstance(component, (gr.Dropdown, gr.Textbox)) and value is not None and not isinstance(value, str):
        return f"{name} must be text, not {_shown(value)}."
    if isinstance(component, gr.Checkbox) and not isinstance(value, bool):
        return f"{name} must be true or false, not {_shown(value)}."
    return None


class StrictBlocks(gr.Blocks):
    """``gr.Blocks`` whose API answers a malformed input with a sentence.

    Gradio reads every input before the handler runs, and answers an API client's input in the
    wrong form (a server path for a file, None or text for a number) with a bare error:
    ``{"error": null}`` on the wire. Here each input is checked first (:func:`_malformed`), and
    anything else Gradio refuses while reading the inputs becomes a sentence too; each refusal
    logs one line, as the handlers' do."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):  # noqa: ANN001, ANN201 - Gradio's
        action = f"/{block_fn.api_name}" if isinstance(block_fn.api_name, str) else block_fn.name
        names = getattr(block_fn, "input_parameter_names", None) or []
        for index, (component, value) in enumerate(zip(block_fn.inputs, inputs)):
            name = (names[index] if index < len(names) else None) or component.label or f"input {index + 1}"
            problem = _malformed(component, value, name)
            if problem:
                logger.info("%s: %s", action, problem)
                raise gr.Error(problem, print_exception=False)
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error as error:  # Gradio's own sentence (a value not among a dropdown's choices, a file type)
            logger.info("%s: %s", action, error.message)
            raise gr.Error(error.message, duration=error.duration, print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - an input Gradio could not read: the caller's to fix
            logger.info("%s: Gradio could not read an input (%s)", action, type(error).__name__)
            message = (
                f"{action}: an input is not in the form this endpoint takes; the app's 'Use via API' page "
                "(gradio_client: view_api()) shows each input's type."
            )
            raise gr.Error(message, print_exception=False) from None


# ----------------------------------------------------------------------------- the zoo


def zoo_entries() -> list[tuple[str, str]]:
    """(name, key) of every avatar: bundled examples, local folders in ZOO, Hub ids loaded. The page
    and the API pick avatars by name (``"dancer-rt256 (example)"``); a key, a folder or a Hub id, is
    what loads it, and a folder's is a server path that visitors never see."""
    entries = local_avatars(EXAMPLE_AVATARS, "example") + local_avatars(ZOO, "local")
    return entries + [(f"{repo_id} (Hub)", repo_id) for repo_id in _hub_ids()]


def _hub_ids() -> list[str]:
    path = ZOO / HUB_LIST
    try:
        return [i for i in json.loads(path.read_text()) if HUB_ID.match(i)] if path.is_file() else []
    except ValueError:
        return []


def _remember_hub_id(repo_id: str) -> None:
    ids = _hub_ids()
    if repo_id not in ids:
        from ram_avatar.atomic import staged_file

        ZOO.mkdir(parents=True, exist_ok=True)
        with staged_file(ZOO / HUB_LIST) as tmp:  # a temporary name of this process's own, not one shared
            tmp.write_text(json.dumps(ids + [repo_id], indent=2))


def _check_key(name: str | None) -> str:
    """The key of the avatar named ``name``: only avatars listed in the zoo may be loaded, so a
    request cannot name an arbitrary path."""
    if not name or not isinstance(name, str):
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
                _ = (
                    pipe.template,
                    pipe.renderer,
                )  # built on first use: now, while the visitor reads "loading the avatar"
            except (OSError, ValueError) as error:
                raise gr.Error(f"Could not load {key}: {error}") from None
            _pipes[key] = pipe
            while len(_pipes) > 3:
                _pipes.pop(next(iter(_pipes)))
        return _pipes[key]


def _bytes(folder: Path) -> int:
    """Bytes in the files under ``folder`` (files removed meanwhile count 0)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            stat = path.lstat()
        except OSError:
            continue
        total += stat.st_size if S_ISREG(stat.st_mode) else 0
    return total


def prune_outputs(keep: Collection[Path] = ()) -> None:
    """Remove result folders, oldest first, beyond KEEP_RESULTS, older than RESULT_HOURS or past
    RESULTS_MB in all; ``keep`` and the folders of create jobs still running stay (their clip and
    previews are in use). Runs at start and with each request: a few stats per folder."""
    if not OUTPUTS.is_dir():
        return
    busy = set(keep) | {Path(j["out"]) for j in _jobs.values() if j["stage"] not in ("done", "failed")}
    dated = []
    for folder in OUTPUTS.iterdir():
        try:
            if folder.is_dir() and folder.name.startswith("r-"):
                dated.append((folder.stat().st_mtime, folder))
        except OSError:  # removed meanwhile
            continue
    now, total = time.time(), 0
    for index, (mtime, folder) in enumerate(sorted(dated, reverse=True)):  # newest first
        total += _bytes(folder)
        stale = index >= KEEP_RESULTS or now - mtime > RESULT_HOURS * 3600 or total > RESULTS_MB * 2**20
        if stale and folder not in busy:
            shutil.rmtree(folder, ignore_errors=True)


def _result_dir() -> Path:
    """A fresh folder for one request's outputs (old ones are pruned: :func:`prune_outputs`)."""
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    folder = OUTPUTS / f"r-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    prune_outputs(keep=[folder])
    return folder


# ----------------------------------------------------------------------------- Animate


def example_motions() -> list[str]:
    return (
        sorted(p.name for p in EXAMPLE_MOTIONS.glob("*") if p.suffix.lower() in MOTION_TYPES)
        if EXAMPLE_MOTIONS.is_dir()
        else []
    )


def _motion_path(upload: str | None, example: str | None) -> Path:
    """The one motion chosen: an upload or an example (the page keeps them exclusive; API callers
    may not). An upload is checked against the limits here, before anything parses it."""
    if not isinstance(upload, (str, os.PathLike, type(None))) or not isinstance(example, (str, type(None))):
        raise gr.Error("upload must be a file (or None) and example the name of an example motion (or None).")
    example = None if example == NO_EXAMPLE else example
    if upload and example:
        raise gr.Error(
            f"Two motions are chosen, the file {Path(upload).name} and the example {example}: "
            f"set the example to '{NO_EXAMPLE}' to use the file, or remove the file."
        )
    if upload:
        path = Path(upload)
        if path.suffix.lower() not in MOTION_TYPES + VIDEO_TYPES:
            raise gr.Error(
                f"{path.name}: not a motion file or a video. Give a BVH, AMASS / SMPL-X .npz / .json, or a clip "
                f"({', '.join(VIDEO_TYPES)})."
            )
        try:
            seconds = _check_upload(path)
        except LimitError:
            raise
        except (OSError, ValueError) as error:
            raise _unusable(path, error) from None
        if seconds > DRIVING_SECONDS:
            raise gr.Error(
                f"{path.name} lasts {seconds:.0f} s; the app drives avatars with clips of up to "
                f"{DRIVING_SECONDS:g} s (it tracks the whole clip): cut it, "
                "or use `ram-avatar animate`."
            )
        return path
    if example:
        if example not in example_motions():
            raise gr.Error(f"{example} is not one of the example motions.")
        return EXAMPLE_MOTIONS / example
    raise gr.Error("Give a motion: upload a motion file or a driving clip, or pick an example motion.")


def _check_upload(path: Path) -> float:
    """Check an upload against the limits before the avatar loads or anything parses it (raises
    LimitError): a motion file's size; a clip's size, frame size, frame rate and duration, from its
    container (:func:`~ram_avatar.tracking.video.probe_video`). Returns the clip's duration in
    seconds (0 for a motion file, or a clip whose container does not say)."""
    if path.suffix.lower() not in VIDEO_TYPES:
        check_limit("motion_file_mb", path.stat().st_size / 2**20, path.name)
        return 0.0
    from ram_avatar.tracking.video import probe_video

    info = probe_video(path)
    return info.num_frames / info.fps


def _unusable(motion: Path, error: Exception) -> gr.Error:
    """The visitor's error for a motion file or clip that cannot be read, named by its upload name."""
    message = public_message(str(error), motion)
    message = message if motion.name in message else f"{motion.name}: {message}"
    return gr.Error(f"{message.rstrip('.')}. Fix or re-export the file, or pick an example motion.")


def _motion_source(motion: Path) -> str:
    """How the summary names the motion used."""
    if motion.parent == EXAMPLE_MOTIONS:
        return f"the example motion `{motion.name}`"
    return f"your {'clip' if motion.suffix.lower() in VIDEO_TYPES else 'file'} `{motion.name}`"


@handler("Animate")
def animate(
    avatar: str,
    upload: str | None,
    example: str | None,
    strength: float,
    max_frames: float,
    progress=gr.Progress(),  # noqa: B008  (Gradio's way of asking for a progress bar)
):
    """Drive an avatar with a motion; returns the avatar video, the template overlay, the OOD plot, a summary."""
    from ram_avatar.pipelines.video import VideoWriter

    key = _check_key(avatar)
    strength = _number(strength, "strength", STRENGTH)
    max_frames = int(_number(max_frames, "max_frames", ANIMATE_FRAMES))
    motion = _motion_path(upload, example)
    progress(0, desc="loading the avatar")
    pipe = get_pipeline(key)
    is_clip = motion.suffix.lower() in VIDEO_TYPES
    progress(0, desc="tracking the clip (slow: every frame is fitted)" if is_clip else "loading the motion")
    try:
        driving = pipe.load_driving(motion, max_frames=max_frames, progress=False)
    except LimitError:
        raise  # its message names the file and the limit: the handler tells it as it is
    except (OSError, ValueError) as error:
        raise _unusable(motion, error) from None
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

    with (
        VideoWriter(out / "avatar.mp4", driving.fps, driving.audio_source, threads=threads) as video,
        VideoWriter(out / "template.mp4", driving.fps, threads=threads) as overlay,
    ):
        for frame in pipe.stream(driving, float(strength), overlay=True, progress=False, mda_log=log, callback=report):
            video.write(frame.image)
            overlay.write(frame.template)
    seconds = time.perf_counter() - start
    plot = None
    summary = (
        f"**{T} frames** of {_motion_source(motion)} at {driving.fps:g} fps, rendered in {seconds:.1f} s "
        f"({T / seconds:.1f} frames/s)."
    )
    if log:
        import numpy as np

        from ram_avatar.pipelines import AnimationResult

        result = AnimationResult(
            driving.fps,
            T,
            ood_before=np.asarray(log["ood_before"]),
            ood_after=np.asarray(log["ood_after"]),
            change_deg=np.asarray(log["change_deg"]),
        )
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
        create_avatar(
            job["clip"],
            str(ZOO / job["name"]),
            work=str(job["work"]),
            minutes=job["minutes"],
            steps=job["steps"],
            max_frames=job["max_frames"],
            name=job["name"],
            progress=False,
            trainer_hook=hook,
        )
        job["stage"] = "done"
    except (
        OSError,
        ValueError,
    ) as error:  # the clip's problem (nobody in view, unreadable): the message says what to do
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
    if not clip or not isinstance(clip, (str, os.PathLike)):
        raise gr.Error("Upload a clip of one person (whole body in view, 30 s to a few minutes).")
    if Path(clip).suffix.lower() not in VIDEO_TYPES:
        raise gr.Error(f"{Path(clip).name} is not a video ({', '.join(VIDEO_TYPES)}).")
    name = _text(name)
    if not NAME.match(name):
        raise gr.Error("Name the avatar with letters, digits, '-' or '_' (up to 48 characters).")
    minutes = _number(minutes, "minutes", CREATE_MINUTES)
    max_frames = int(_number(max_frames, "max_frames", CREATE_FRAMES))
    if (ZOO / name).exists() or any(j["name"] == name and j["stage"] not in ("done", "failed") for j in _jobs.values()):
        raise gr.Error(f"An avatar named {name} exists or is being made; choose another name.")
    try:
        _check_upload(Path(clip))  # now, rather than in the job after it started
    except LimitError:
        raise
    except (OSError, ValueError) as error:
        message = public_message(str(error), clip)  # the library's says what to do
        raise gr.Error(message if Path(clip).name in message else f"{Path(clip).name}: {message}") from None
    job_id = uuid.uuid4().hex[:8]
    out = _result_dir()
    work = ZOO / f".{name}.work"
    clip_copy = (
        out / "clip" / Path(clip).name
    )  # the upload cache may be cleaned while the job runs; the name is the upload's
    clip_copy.parent.mkdir()
    shutil.copyfile(clip, clip_copy)
    job = {
        "id": job_id,
        "name": name,
        "clip": str(clip_copy),
        "work": work,
        "out": out,
        "minutes": minutes,
        "steps": max(200, int(minutes * 60)),
        "max_frames": max_frames,
        "stage": "queued",
    }
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


class _LiveTab:
    """One browser session's Live tab: the avatar's key, its live loop and the number of the avatar
    frame last sent to the page."""

    def __init__(self, key: str, live: Any):
        self.key, self.live, self.sent = key, live, -1


@handler("Live")
def live(frame, avatar: str, strength: float, request: gr.Request):
    """One webcam frame in; out, the newest avatar frame when one was rendered since the last call,
    else ``gr.skip()`` (the page keeps showing the last one). Each browser session has a live loop
    of its own (:class:`~ram_avatar.pipelines.live.BackgroundLive`) that detects and renders on
    threads of its own, always from the newest frame: a call never waits for them, so the webcam's
    stream never queues frames behind a slow render."""
    if frame is None:
        return gr.skip()
    from ram_avatar.pipelines.live import BackgroundLive, LiveSession

    key, strength = _check_key(avatar), _number(strength, "strength", STRENGTH)
    shape = getattr(frame, "shape", ())
    if len(shape) != 3 or shape[2] != 3:
        raise gr.Error("A camera frame must be an RGB image.")
    check_limit("video_pixels", shape[0] * shape[1], "the camera frame")
    session_id = request.session_hash or "local"
    tab = _live.get(session_id)
    if tab is None or tab.key != key:
        end_live(session_id)  # another avatar: a new loop
        while len(_live) >= LIVE_LOOPS:  # sessions an unload never ended (API clients): the oldest goes
            end_live(next(iter(_live)))
        session = LiveSession(get_pipeline(key), mda_strength=strength)
        # warmed up on the loop's thread, for this camera's frame size: the first frames do not wait for it
        tab = _live[session_id] = _LiveTab(key, BackgroundLive(session, warm_up=shape[:2], fps=1 / LIVE_EVERY))
    tab.live.session.mda_strength = strength  # the renderer reads it for its next frame
    try:
        rendered = tab.live.push(frame)
    except Exception:
        _live.pop(session_id, None)  # the loop has stopped (and closed): the next frame starts a new one
        raise
    if rendered is None or rendered.index == tab.sent:
        return gr.skip()
    tab.sent = rendered.index
    return rendered.image


def end_live(session_id: str | None) -> None:
    """Stop a browser session's live loop (when the session ends or changes avatar)."""
    tab = _live.pop(session_id or "local", None)
    if tab is not None:
        tab.live.close()


def _live_session_ended(request: gr.Request) -> None:
    """Gradio's unload event: the tab was closed or reloaded."""
    end_live(request.session_hash)


# ----------------------------------------------------------------------------- Zoo


def zoo_markdown() -> str:
    """The avatars in the zoo by name; the app's own folders (the examples) with their path in the app."""
    entries = zoo_entries()
    if not entries:
        return (
            "*The zoo is empty: run `python scripts/make_example_avatar.py`, create an avatar, or load one from "
            "the Hub.*"
        )
    lines = []
    for name, key in entries:
        where = f" — `{Path(key).relative_to(ROOT)}`" if Path(key).is_relative_to(ROOT) else ""
        lines.append(f"- **{name}**{where}")
    return "\n".join(lines)


@handler("Loading from the Hub")
def load_from_hub(repo_id: str):
    repo_id = _text(repo_id)
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
    repo_id = _text(repo_id)
    if not HUB_ID.match(repo_id):
        raise gr.Error("A Hub id looks like owner/name.")
    if not token or not isinstance(token, str):
        raise gr.Error("Pushing needs a Hub token with write access (huggingface.co/settings/tokens).")
    try:
        commit = get_pipeline(key).push_to_hub(repo_id, token=token, private=bool(private) or None)
    except Exception as error:  # noqa: BLE001 - any Hub error is the user's to read
        raise gr.Error(f"Push failed: {error}") from None
    return f"Pushed to {commit.commit_url}. Only push avatars of people who agreed to it."


@handler("Zoo")
def card(name: str | None) -> str:
    """The Zoo tab's model card of the avatar picked."""
    return card_markdown(_check_key(name)) if name else ""


@handler("Listing the Hub's avatars")
def browse_hub():
    """The Zoo's two listings: the avatars here, and the Hub's ram-avatar avatars (or that the Hub
    is unreachable, and why), with the choice of a Hub avatar to load (:func:`load_from_hub`)."""
    listing = list_hub_avatars()
    choices = [avatar.repo_id for avatar in listing.avatars]
    return zoo_markdown(), hub_markdown(listing, set(_hub_ids())), gr.update(choices=choices, value=None)


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
    with StrictBlocks(title="ram-avatar", analytics_enabled=False, delete_cache=(CACHE_CHECK_S, CACHE_AGE_S)) as demo:
        gr.Markdown(
            "# ram-avatar\nReal-time full-body avatars from one video (RAM-Avatar, CVPR 2024). "
            "Only make or share avatars of people who agreed to it."
        )
        with gr.Tab("Animate"):
            with gr.Row():
                avatar_a = gr.Dropdown(names, value=first, label="Avatar", scale=3)
                refresh = gr.Button("Refresh zoo", scale=1)
            with gr.Row():
                upload = gr.File(
                    label="Motion file (BVH, AMASS / SMPL-X .npz / .json) or driving clip",
                    file_types=list(MOTION_TYPES + VIDEO_TYPES),
                    type="filepath",
                )
                with gr.Column():
                    example = gr.Dropdown(
                        [NO_EXAMPLE] + motions,
                        value=motions[0] if motions else NO_EXAMPLE,
                        label=f"...or an example motion ('{NO_EXAMPLE}': the file)",
                    )
                    strength = gr.Slider(
                        *STRENGTH,
                        value=DEFAULT_STRENGTH,
                        step=0.05,
                        label="MDA strength (0 = the motion as it is; more pulls poses far outside "
                        "the avatar's range further in)",
                    )
                    max_frames = gr.Slider(*ANIMATE_FRAMES, value=150, step=10, label="Frames (at most)")
                    go = gr.Button("Animate", variant="primary")
            with gr.Row():
                video = gr.Video(label="Avatar", interactive=False, autoplay=True, loop=True, height=380)
                overlay = gr.Video(label="Template overlay", interactive=False, autoplay=True, loop=True, height=380)
                plot = gr.Image(label="MDA: out-of-distribution score", type="filepath", interactive=False, height=380)
            summary = gr.Markdown()
            go.click(
                animate,
                [avatar_a, upload, example, strength, max_frames],
                [video, overlay, plot, summary],
                api_name="animate",
            )
            # One motion at a time: uploading sets the example to "none", picking an example removes the upload.
            upload.upload(lambda: NO_EXAMPLE, None, example, api_visibility="private")
            example.input(
                lambda choice: gr.update() if choice == NO_EXAMPLE else None, example, upload, api_visibility="private"
            )
        with gr.Tab("Create"):
            gr.Markdown(
                "Upload a clip of **one person who agreed to it**, whole body in view. It is tracked, an avatar is "
                "trained for the minutes you choose, and it appears in the zoo. The job keeps running if you close "
                "this page."
            )
            with gr.Row():
                clip = gr.File(label="Clip", file_types=list(VIDEO_TYPES), type="filepath")
                with gr.Column():
                    name = gr.Textbox(label="Avatar name", value="my-avatar")
                    minutes = gr.Slider(*CREATE_MINUTES, value=10, step=1, label="Training minutes")
                    frames = gr.Slider(*CREATE_FRAMES, value=300, step=10, label="Frames tracked (at most)")
                    start = gr.Button("Create", variant="primary")
            if EXAMPLE_CLIP.is_file():
                gr.Examples(
                    [[str(EXAMPLE_CLIP), "dancer"]], [clip, name], label="Example clip: a synthetic (rendered) dancer"
                )
            with gr.Row():
                track_preview = gr.Video(label="Tracking preview (keypoints | fitted template)", interactive=False)
                train_preview = gr.Image(
                    label="Training preview (GT | avatar | error)", type="filepath", interactive=False
                )
            status = gr.Markdown()
            jobs = gr.Markdown(jobs_table())
            gr.Button("Refresh jobs").click(jobs_table, None, jobs, api_name="jobs")
            start.click(
                create, [clip, name, minutes, frames], [track_preview, train_preview, status], api_name="create"
            )
        with gr.Tab("Live"):
            gr.Markdown(
                f"Webcam in, avatar out: frames are detected, fitted and rendered on this machine, "
                f"{LIVE_FPS_NOTE}; frames it has no time for are skipped, so the avatar stays about 0.1-0.2 s "
                "behind the camera."
            )
            with gr.Row():
                avatar_l = gr.Dropdown(names, value=first, label="Avatar")
                strength_l = gr.Slider(*STRENGTH, value=DEFAULT_STRENGTH, step=0.05, label="MDA strength")
            with gr.Row():
                webcam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Camera")
                live_out = gr.Image(label="Avatar", type="numpy", interactive=False, elem_id="live-avatar")
            webcam.stream(
                live,
                [webcam, avatar_l, strength_l],
                live_out,
                stream_every=LIVE_EVERY,
                concurrency_limit=1,
                show_progress="hidden",
                api_name="live",
            )
            demo.unload(_live_session_ended)
        with gr.Tab("Zoo") as zoo_tab:
            listing = gr.Markdown(zoo_markdown())
            with gr.Row():
                avatar_z = gr.Dropdown(names, value=first, label="Avatar", scale=3)
                refresh_z = gr.Button("Refresh", scale=1)
            card_view = gr.Markdown(card_markdown(entries[0][1]) if entries else "")
            avatar_z.change(card, avatar_z, card_view, api_name="card")
            with gr.Accordion("Avatars on the Hugging Face Hub", open=True):
                hub_listing = gr.Markdown("*Opening this tab lists them.*")
                with gr.Row():
                    hub_pick = gr.Dropdown([], value=None, label="Hub avatar (choose one to load it)", scale=3)
                    search = gr.Button("Search the Hub", scale=1)
                with gr.Row():
                    hub_id = gr.Textbox(label="...or any Hub id (owner/name)", scale=3)
                    load = gr.Button("Load", scale=1)
            with gr.Accordion("Push to the Hugging Face Hub", open=False):
                avatar_p = gr.Dropdown(names, value=first, label="Avatar")
                repo = gr.Textbox(label="Hub id to push to (owner/name)")
                token = gr.Textbox(label="Hub token (write)", type="password")
                private = gr.Checkbox(label="Private repository", value=True)
                push_button = gr.Button("Push")
            message = gr.Markdown()
            dropdowns = [avatar_a, avatar_l, avatar_z, avatar_p, listing]
            load.click(load_from_hub, hub_id, dropdowns + [message], api_name="load_from_hub")
            hub_pick.input(load_from_hub, hub_pick, dropdowns + [message], api_name=False)
            # Waiting on the Hub (at most zoo.HUB_TIMEOUT_S) holds back no render: no concurrency limit.
            listings = [listing, hub_listing, hub_pick]
            search.click(browse_hub, None, listings, api_name="browse_hub", concurrency_limit=None)
            zoo_tab.select(browse_hub, None, listings, api_name=False, concurrency_limit=None)
            push_button.click(push, [avatar_p, repo, token, private], message, api_name="push")
            for button in (refresh, refresh_z):
                button.click(_refresh, avatar_a, dropdowns, api_name=False)
    return demo


def launch(**kwargs) -> tuple:
    """Build and launch; ``kwargs`` go to ``Blocks.launch`` (e.g. ``prevent_thread_lock=True``)."""
    OUTPUTS.mkdir(parents=True, exist_ok=True)
    prune_outputs()  # what earlier runs left
    from ram_avatar.device import keep_freed_memory

    keep_freed_memory()  # fewer page faults while rendering (see there)
    demo = build_app()
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo, demo.launch(
        allowed_paths=[str(OUTPUTS)],
        max_file_size=MAX_UPLOAD,
        theme=THEME,
        ssr_mode=False,
        footer_links=["api", "settings"],
        **kwargs,
    )


if __name__ == "__main__":
    # The app's own lines (ram_avatar.*) at INFO; other libraries' only from WARNING (httpx logs every request at INFO).
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("ram_avatar").setLevel(logging.INFO)
    launch()
