"""The ``ram-avatar`` command line."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time

from ram_avatar import __version__

# Modules with ``add_commands(subparsers)``; they import only argparse at module level so that
# ``ram-avatar --help`` stays fast, and load the heavy parts inside each command.
COMMAND_MODULES: list[str] = [
    "ram_avatar.tracking.cli", "ram_avatar.motion.cli", "ram_avatar.mda.cli", "ram_avatar.training.cli",
    "ram_avatar.evaluation.cli", "ram_avatar.pipelines.cli",
]


_REST_MARKUP = re.compile(r"(?::[a-z]+:)?``?~?([^`]+?)``?")  # ``code``, `text`, :func:`~module.name`


def plain(text: str | None) -> str | None:
    """A docstring as help text: argparse prints it as it is, so reST markup (``code``, roles)
    is dropped, keeping what it marks."""
    return None if text is None else _REST_MARKUP.sub(r"\1", text)


def _demo(args: argparse.Namespace) -> int:
    from ram_avatar.body import load_template
    from ram_avatar.demo import render_demo
    from ram_avatar.device import default_device

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
    parser.add_argument("--body-template", choices=("anny", "smplx"), default="anny",
                        help="body template (default: anny, needs no registration)")  # fmt: skip
    parser.add_argument("--body-model-path", default=None,
                        help="smplx only: folder with SMPLX_NEUTRAL.npz (default $RAM_AVATAR_SMPLX_DIR)")  # fmt: skip
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if present)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ram-avatar", description=plain(__doc__))
    parser.add_argument("--version", action="version", version=f"ram-avatar {__version__}")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch (default: PyTorch's choice; 1 is often fastest on a busy machine)")  # fmt: skip
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


def run(args: argparse.Namespace, prog: str) -> int:
    """Run the parsed command; user errors print one line that says what to do, no traceback."""
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2


def script_main(module: str, doc: str | None, add_args, argv: list[str] | None = None) -> int:
    """``main`` of a ``python -m`` / ``accelerate launch -m`` script taking one command's arguments."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=plain(doc),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
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
