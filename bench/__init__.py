"""Benchmarks of the local real stack: `make bench` (`python -m bench`)."""
