"""Write the Space's ``spaces/requirements.txt`` from the package's dependencies, or check it.

    python scripts/space_requirements.py            # rewrite spaces/requirements.txt
    python scripts/space_requirements.py --check    # exit 1 with a diff when it is out of date

The Space runs ``app.py`` beside a copy of ``ram_avatar/`` (not an installed package), so it needs
exactly ``pyproject.toml``'s ``[project].dependencies``, less Gradio: a Gradio Space installs Gradio
itself, at ``sdk_version`` from the front matter of ``spaces/README.md``, which must equal the
package's ``gradio==`` pin. Plus PyTorch's CPU wheel index: the Space has no GPU, and PyPI's torch
for Linux is a multi-GB CUDA build. ``tests/test_space.py`` runs the check in CI.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
SPACE_README = ROOT / "spaces" / "README.md"
REQUIREMENTS = ROOT / "spaces" / "requirements.txt"
TORCH_CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
HEADER = """\
# Generated from pyproject.toml by scripts/space_requirements.py: do not edit, run that script
# after changing the package's dependencies (tests/test_space.py fails until then).
# Gradio itself comes from sdk_version in README.md (equal to pyproject.toml's pin).
# PyTorch's CPU wheels: PyPI's torch for Linux is a multi-GB CUDA build, and the Space has no GPU.
"""


def requirement_name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement (``"Foo_Bar>=1"`` -> ``"foo-bar"``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"pyproject.toml: {requirement!r} is not a requirement")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def sdk_version(readme: str) -> str:
    """``sdk_version`` of a Space README's YAML front matter."""
    front = re.match(r"---\n(.*?)\n---", readme, re.S)
    version = re.search(r"^sdk_version:\s*[\"']?([^\s\"']+)", front.group(1), re.M) if front else None
    if version is None:
        raise ValueError(
            "spaces/README.md has no sdk_version in its front matter: add the Gradio version, e.g. sdk_version: 6.31.0"
        )
    return version.group(1)


def render(project: dict, readme: str) -> str:
    """The requirements file for ``project`` (pyproject.toml, parsed) and the Space's README text."""
    dependencies = project["project"]["dependencies"]
    gradio = [r for r in dependencies if requirement_name(r) == "gradio"]
    sdk = sdk_version(readme)
    if [r.replace(" ", "") for r in gradio] != [f"gradio=={sdk}"]:
        raise ValueError(
            f"pyproject.toml pins {gradio or 'no gradio'} but spaces/README.md has sdk_version: {sdk}: make them "
            "the same version"
        )
    return HEADER + TORCH_CPU_INDEX + "\n" + "".join(f"{r}\n" for r in dependencies if requirement_name(r) != "gradio")


def check(expected: str, path: Path) -> str:
    """'' when ``path`` holds ``expected``, else a unified diff of what to change."""
    actual = path.read_text(encoding="utf-8") if path.is_file() else ""
    if actual == expected:
        return ""
    return "".join(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), str(path), "expected"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 (with a diff) if the file is out of date; change nothing"
    )
    args = parser.parse_args(argv)
    expected = render(tomllib.loads(PYPROJECT.read_text(encoding="utf-8")), SPACE_README.read_text(encoding="utf-8"))
    if args.check:
        diff = check(expected, REQUIREMENTS)
        if diff:
            print(
                f"{REQUIREMENTS.relative_to(ROOT)} is out of date with pyproject.toml: run python "
                f"scripts/space_requirements.py\n{diff}",
                file=sys.stderr,
            )
            return 1
        return 0
    REQUIREMENTS.write_text(expected, encoding="utf-8")
    print(f"wrote {REQUIREMENTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
