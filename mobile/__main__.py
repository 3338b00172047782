"""``python -m mobile --node DIR``: the same as ``mesh112 app --node DIR``."""

import sys

from mobile.cli import main

sys.exit(main())
