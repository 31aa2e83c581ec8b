"""``python -m sam3video.cli``: the ``sam3video`` command."""

import sys

from sam3video.cli import main

sys.exit(main())
