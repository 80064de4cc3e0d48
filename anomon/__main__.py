"""Run the `anomon` command as `python -m anomon`."""

from anomon.cli import main

raise SystemExit(main())
