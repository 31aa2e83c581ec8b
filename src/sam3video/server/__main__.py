"""``python -m sam3video.server``: the same as ``sam3video serve``."""

import sys

from sam3video.server.cli import main

sys.exit(main())
