"""The app layer: what a user calls. ``cli`` (the ``fedfit`` command), ``api`` (``fedfit.run``,
``fedfit.load_run``, ``fedfit.sweep``) and ``sweeps`` (experiment files, their runs and their tables).

The one part of ``fedfit`` that imports ``strategies/`` and ``clients/`` (lazily: Flower and Ray load
only when a command starts runs); nothing below it imports it (``lint-imports``, pyproject.toml).
"""
