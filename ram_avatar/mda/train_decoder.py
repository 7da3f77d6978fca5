"""Train a subject's pose decoder as a script, for ``accelerate launch`` or plain ``python -m``.

    accelerate launch -m ram_avatar.mda.train_decoder SUBJECT OUT --prior PRIOR [--steps N] [--resume]

Same arguments as ``ram-avatar align train``.
"""

from __future__ import annotations

import argparse
import sys

from ram_avatar.mda.cli import add_decoder_train_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ram_avatar.mda.train_decoder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_decoder_train_args(parser)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as error:  # user errors: say what to do, no traceback
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
