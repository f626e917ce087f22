"""
Entry point of C{python -m splicetx.bench}.
"""

import sys

from splicetx.bench._cli import main

if __name__ == "__main__":
    sys.exit(main())
