"""The conformance suite itself runs as part of the tests (one test per id)."""

from conformance.test_conformance import test_conformance  # noqa: F401  (collected here too)
