"""The toy world: a miniature of the paper's setting that the suite builds and ships itself.

A seeded English-like corpus (``world``), T5's span-corruption objective (``span_corruption``),
a ladder of small T5.1.1-shaped models pre-trained on it and LM-adapted by ``repro.lm_adapt``
(``build``), shipped in ``repro/toy_models/``, plus toy tasks in SuperGLUE's text-to-text form
(``repro.tasks.toy``). See docs/toy_world.md.

    python -m repro.toyworld build            # rebuild repro/toy_models/ (~30 min, see docs)
    sh sweeps/toy/run_all.sh                 # the four toy Figure 3 panels → results/toy/
"""
