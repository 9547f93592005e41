"""``python -m core ...``: the SolarSeg engine's command line."""

from .cli import main

raise SystemExit(main())
