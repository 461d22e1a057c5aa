"""``python -m training [options]``: the same as ``fraudops train [options]``."""

import sys

from fraudops.cli.app import app

if __name__ == "__main__":
    sys.exit(app(["train", *sys.argv[1:]]))
