"""Verification: a Lab and a Runner per node in, a Report of Checks out (stages.py in order)."""
