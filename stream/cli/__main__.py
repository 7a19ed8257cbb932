"""``python -m stream.cli`` runs the ``paywatch`` command."""

import sys

from stream.cli import main

sys.exit(main())
