"""`python -m catalog_sync.cli`: the same as the `catalog-sync` script."""

from __future__ import annotations

import sys

from catalog_sync.cli import main

sys.exit(main())
