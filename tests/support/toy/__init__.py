"""A test-only provider, registered from tests/unit/test_toy_provider.py (never in labgen's registry)."""
