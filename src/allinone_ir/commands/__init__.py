"""The ``allinone-ir`` sub-commands: one module per command, each with ``add_parser`` and ``run``.

What several commands share (the network options, option types, the progress over files) is in
``allinone_ir.commands._common``; :mod:`allinone_ir.cli` dispatches to the modules.
"""
