"""Command line of convexrf from a checkout: ``python run.py train|predict|visualize|report ...``.

The same as the installed ``convexrf`` console script (:mod:`pipeline.cli`).
"""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
