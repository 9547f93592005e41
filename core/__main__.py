"""``python -m core ...``: the SolarSeg engine's command line."""

from .cli.main import main

raise SystemExit(main())
