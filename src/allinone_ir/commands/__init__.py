"""The ``allinone-ir`` sub-commands: one module per command, each with ``add_parser`` and ``run``."""
