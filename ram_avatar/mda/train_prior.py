"""Train the pose prior as a script, for ``accelerate launch`` (multi-GPU) or plain ``python -m``.

    accelerate launch -m ram_avatar.mda.train_prior MOTION_DIR... OUT [--steps N] [--resume]

Same arguments as ``ram-avatar motion-prior train``.
"""

from __future__ import annotations

import sys

from ram_avatar.cli import script_main
from ram_avatar.mda.cli import add_prior_train_args

if __name__ == "__main__":
    sys.exit(script_main(__spec__.name, __doc__, add_prior_train_args))
