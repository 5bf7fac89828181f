"""`python -m rlm_desktop` — same as the `rlm-desktop` command."""

import sys

from rlm_desktop.cli import main

sys.exit(main())
