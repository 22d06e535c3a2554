"""`python -m packager` is the `dsopack` command."""

import sys

from packager.cli import main

sys.exit(main())
