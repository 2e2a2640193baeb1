"""``python -m segmentflow``: the ``segmentflow`` command."""

import sys

from segmentflow.cli.main import main

sys.exit(main())
