"""``python -m asyncmail``: the same as the ``asyncmail`` command."""

from .cli import main

raise SystemExit(main())
