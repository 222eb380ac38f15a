"""``python -m thingmask.cli``: the same as the ``thingmask`` command."""

import sys

from thingmask.cli import main

sys.exit(main())
