"""The logic behind the command-line entry points, as plain functions that tests can call.

Submodules are imported where they are used; importing this package loads nothing heavy.
"""
