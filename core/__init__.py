"""The shared bottom layer: user errors (``errors``), device resolution (``devices``) and run identity with
atomic writes (``runinfo``). Every package may import ``core``; ``core`` imports none of them.

Layers, bottom to top: core <- data <- callbacks <- models <- trainer <- hydra_plugins. A module imports only
from its own layer or those below it (tests/core/test_layers.py checks this)."""
