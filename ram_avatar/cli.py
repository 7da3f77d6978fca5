"""The ``ram-avatar`` command line."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import time
import traceback

from ram_avatar import __version__

# Modules with ``add_commands(subparsers)``; they import only argparse at module level so that
# ``ram-avatar --help`` stays fast, and load the heavy parts inside each command.
COMMAND_MODULES: list[str] = [
    "ram_avatar.tracking.cli",
    "ram_avatar.motion.cli",
    "ram_avatar.mda.cli",
    "ram_avatar.training.cli",
    "ram_avatar.evaluation.cli",
    "ram_avatar.pipelines.cli",
    "ram_avatar.pipelines.live_cli",
]


_REST_MARKUP = re.compile(r"(?::[a-z]+:)?``?~?([^`]+?)``?")  # ``code``, `text`, :func:`~module.name`


def plain(text: str | None) -> str | None:
    """A docstring as help text: argparse prints it as it is, so reST markup (``code``, roles)
    is dropped, keeping what it marks."""
    return None if text is None else _REST_MARKUP.sub(r"\1", text)


def _demo(args: argparse.Namespace) -> int:
    from ram_avatar.atomic import check_output
    from ram_avatar.body import load_template
    from ram_avatar.demo import render_demo
    from ram_avatar.device import default_device

    check_output(args.out)  # before the template loads
    device = args.device or default_device()
    print(f"ram-avatar {__version__}: loading the {args.body_template} body template on {device} ...")
    template = load_template(args.body_template, device=device, model_path=args.body_model_path)
    start = time.perf_counter()
    path = render_demo(template, args.out, num_frames=args.frames, image_size=args.size)
    seconds = time.perf_counter() - start
    print(f"wrote {path} and {path.with_suffix('.png')} ({args.frames} frames, {args.frames / seconds:.1f} frames/s)")
    return 0


def add_template_args(parser: argparse.ArgumentParser) -> None:
    """The body-template options every command that poses a body takes."""
    parser.add_argument(
        "--body-template",
        choices=("anny", "smplx"),
        default="anny",
        help="body template (default: anny, needs no registration)",
    )
    parser.add_argument(
        "--body-model-path",
        default=None,
        help="smplx only: folder with SMPLX_NEUTRAL.npz (default $RAM_AVATAR_SMPLX_DIR)",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if present)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ram-avatar", description=plain(__doc__))
    parser.add_argument("--version", action="version", version=f"ram-avatar {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the full traceback (also: RAM_AVATAR_DEBUG=1)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for PyTorch (default: PyTorch's choice; 1 is often fastest on a busy machine)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="drive the body template with a built-in motion and render it to mp4")
    demo.add_argument("--out", default="outputs/demo.mp4", help="output video (default: outputs/demo.mp4)")
    demo.add_argument("--frames", type=int, default=60)
    demo.add_argument("--size", type=int, default=256, help="square output resolution in pixels")
    add_template_args(demo)
    demo.set_defaults(run=_demo)
    for name in COMMAND_MODULES:  # each feature area registers its own subcommands
        importlib.import_module(name).add_commands(commands)
    return parser


def debugging(args: argparse.Namespace) -> bool:
    """Whether errors show their traceback: ``--debug`` or ``RAM_AVATAR_DEBUG`` set (not 0)."""
    return bool(getattr(args, "debug", False)) or os.environ.get("RAM_AVATAR_DEBUG", "").strip() not in ("", "0")


def describe_os_error(error: OSError) -> str:
    """One line for an I/O error a user can meet: what went wrong, with which file, what to do."""
    if error.errno is None:  # raised with a message of ours (or a library's)
        return str(error)
    name = error.filename2 or error.filename  # of a rename or copy: the destination
    if name is None:
        return str(error.strerror or error)
    name = os.fsdecode(name)
    messages = {
        errno.ENOSPC: f"no space left on the device holding {name}: free some space (or write elsewhere) and run again",
        errno.EDQUOT: f"the disk quota of the device holding {name} is used up: free some space and run again",
        errno.EFBIG: f"{name} is over the file size limit (of the file system or `ulimit -f`): write it elsewhere",
        errno.EACCES: f"permission denied for {name}: change its permissions or choose another path",
        errno.EPERM: f"operation not permitted on {name}: change its permissions or choose another path",
        errno.EROFS: f"{name} is on a read-only file system: choose another path",
        errno.EISDIR: f"{name} is a folder where a file is needed: give a file path",
        errno.ENOTDIR: f"part of {name} is a file where a folder is needed: choose another path",
        errno.EEXIST: f"{name} already exists: remove it or choose another path",
        errno.ENOENT: f"{name} does not exist: check the path",
        errno.ENOTEMPTY: f"{name} is a folder that is not empty: remove it or choose another path",
    }
    return messages.get(error.errno, f"{name}: {error.strerror}")


def error_line(error: BaseException) -> str:
    """An expected failure as one line: its message (an I/O error's says which file and what to
    do) and its notes (e.g. how to resume), line breaks joined."""
    text = describe_os_error(error) if isinstance(error, OSError) else str(error)
    text = " ".join([text or type(error).__name__, *getattr(error, "__notes__", ())])
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def run(args: argparse.Namespace, prog: str) -> int:
    """Run the parsed command. An expected failure (a bad value or file, a missing, existing or
    unwritable path, a full disk: ValueError or OSError) prints one line ``PROG: error: ...`` and
    returns 2; Ctrl-C prints one line and returns 130. Tracebacks only with :func:`debugging`;
    any other exception is a bug and keeps its traceback."""
    try:
        return args.run(args)
    except KeyboardInterrupt as error:
        if debugging(args):
            traceback.print_exc()
        print(" ".join([f"{prog}: interrupted", *getattr(error, "__notes__", ())]), file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:
        if debugging(args):
            traceback.print_exc()
        print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
        return 2


def script_main(module: str, doc: str | None, add_args, argv: list[str] | None = None) -> int:
    """``main`` of a ``python -m`` / ``accelerate launch -m`` script taking one command's arguments."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {module}", description=plain(doc), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    return run(parser.parse_args(argv), parser.prog)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ram_avatar.device import keep_freed_memory

    keep_freed_memory()  # fewer page faults in the frame loops (see there)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    return run(args, f"ram-avatar {args.command}")


if __name__ == "__main__":
    sys.exit(main())
