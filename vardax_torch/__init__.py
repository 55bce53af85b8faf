"""vardax_torch (work in progress)."""
