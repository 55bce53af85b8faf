"""vardax_jax (work in progress)."""
