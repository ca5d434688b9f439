"""``python -m stamp_ros.cli``: the ``stamp-ros`` command."""

import sys

from stamp_ros.cli.main import main

sys.exit(main())
