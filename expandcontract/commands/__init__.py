"""CLI commands, one module per group; each exposes ``register(app)``.

Modules import heavy libraries inside the command bodies so ``ecm --help`` stays fast.
"""
