"""Dock widgets. Each one only collects parameters and calls the public API."""
