"""conformance (work in progress)."""
