"""Benchmarks: scripts that report figures side by side with their peers; not tests."""
