"""``python -m worker.sandbox --port 8099 --lag 2 --fail-after 0.1``: see ``cli.py``."""

from worker.sandbox.cli import main

raise SystemExit(main())
