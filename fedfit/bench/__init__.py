"""``fedfit bench``: how close one run gets to its hardware's limit on this machine, and what it costs.

``run`` (the bench: ``run_bench``, ``format_table``), ``measures`` (what it measures without Flower or
Ray: bare and client throughput, the ratios read from a run's rounds, the targets) and ``memory``
(peak PSS of a process tree). An app-layer package: the command line and ``experiments/peers`` use it;
the runtime (``strategies/``, ``clients/``, the core) never imports it (``lint-imports``). The one
figure the runtime shares with it, the simulated clock's seconds per image on the reference machine,
is a constant in ``fedfit.clock``.
"""
