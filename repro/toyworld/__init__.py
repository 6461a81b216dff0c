"""The toy world: a miniature of the paper's setting that the suite builds and ships itself.

A seeded English-like corpus (``world``), T5's span-corruption objective (``span_corruption``),
a ladder of small T5.1.1-shaped models pre-trained on it and LM-adapted by ``repro.lm_adapt``
(``build``), shipped in ``repro/toy_models/``, plus two toy tasks in SuperGLUE's text-to-text
form (``tasks``: ``toy_review``, ``toy_fact``), registered with the suite's task registry when
this package is imported. See docs/toy_world.md.

    python -m repro.toyworld build            # rebuild repro/toy_models/ (~30 min, see docs)
    sh sweeps/toy/run_all.sh                 # the four toy Figure 3 panels → results/toy/
"""

from repro.toyworld import tasks as _tasks  # noqa: F401  (registers toy_review, toy_fact)
