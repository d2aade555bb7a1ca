"""``python -m tfvae``: the command line (see :mod:`tfvae.cli`).

Also the ``tfvae`` console script (``tfvae = "tfvae.__main__:main"``).
"""

import sys

from tfvae.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
