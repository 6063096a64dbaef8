"""`python -m infercloud`: the command line, same as the `infercloud` script."""

import sys

from infercloud.cli import main

sys.exit(main())
