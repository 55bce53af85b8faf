"""``python -m vardax_torch train ...``: the backend-neutral experiment driver on this backend."""

import sys

import vardax_torch
from pipekit_cycle.experiment import main

if __name__ == "__main__":
    sys.exit(main(vardax_torch))
