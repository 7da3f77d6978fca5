"""Train a subject's pose decoder as a script, for ``accelerate launch`` or plain ``python -m``.

    accelerate launch -m ram_avatar.mda.train_decoder SUBJECT OUT --prior PRIOR [--steps N] [--resume]

Same arguments as ``ram-avatar align train``.
"""

from __future__ import annotations

import sys

from ram_avatar.cli import script_main
from ram_avatar.mda.cli import add_decoder_train_args

if __name__ == "__main__":
    sys.exit(script_main(__spec__.name, __doc__, add_decoder_train_args))
