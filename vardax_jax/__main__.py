"""``python -m vardax_jax train ...``: the backend-neutral experiment driver on this backend."""

import sys

import vardax_jax
from pipekit_cycle.experiment import main

if __name__ == "__main__":
    sys.exit(main(vardax_jax))
