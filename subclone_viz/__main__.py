"""``python -m subclone_viz`` runs the ``subclone-viz`` command line (see :mod:`subclone_viz.cli`)."""

from .cli import main

raise SystemExit(main())
