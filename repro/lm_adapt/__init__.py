"""LM adaptation: continue training all weights of T5.1.1 on the prefix-LM objective (Fig. 3d).

Only the 100K-step LM-adapted checkpoints were ever released; Figure 3(d) also needs 10K and
50K. This stage makes them from the T5.1.1 checkpoint itself:

    python -m repro.lm_adapt model=base lm_adapt.steps=[10000,50000,100000]
    torchrun --nproc_per_node=8 -m repro.lm_adapt model=xl        # data parallel, one node

    T5.1.1 ─► C4 en (streamed) or a local corpus ─► prefix-LM examples (random split point:
    prefix → input, continuation → target) ─► fixed-length batches ─► Adafactor (T5's
    pre-training settings) ─► <paths.lm_adapt_dir>/<size>/step_<N>/  (a plain HF checkpoint)

``repro.run`` picks these up with ``objective=lm_adapt lm_adapt_steps=N``. A run interrupted at
any point resumes from ``<size>/last/`` (weights, optimizer, step, RNG, data position) and ends
bit-identical on CPU to one that never stopped. See docs/lm_adapt.md for the choices made.

The rooms: ``config`` (what a run does, where it reads and writes), ``data`` (the prefix-LM
examples and the corpus stream), ``checkpoints`` (``step_<N>/`` and ``last/``), ``train`` (the
optimizer and the loop: :func:`lm_adapt`), ``cli`` (the Hydra entry). The names below are the
API the docs name (``repro.lm_adapt.lm_adapt``, ``repro.lm_adapt.prefix_lm_examples``).
"""

from repro.lm_adapt.config import (
    LMAdaptConfig,
    LMAdaptRun,
    output_dir,
    source_checkpoint,
    to_lm_adapt_config,
)
from repro.lm_adapt.data import PrefixLMExample, collate_fixed, prefix_lm_examples
from repro.lm_adapt.train import lm_adapt, rsqrt_lr

__all__ = [
    "LMAdaptConfig",
    "LMAdaptRun",
    "PrefixLMExample",
    "collate_fixed",
    "lm_adapt",
    "output_dir",
    "prefix_lm_examples",
    "rsqrt_lr",
    "source_checkpoint",
    "to_lm_adapt_config",
]
