"""Implementations of the ``allinone-ir`` sub-commands (one module per command)."""
