"""assets tests."""
