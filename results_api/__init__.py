"""Read-only HTTP service over the results store."""
