"""Packing a sweep: jobs that share a backbone and a task train in one process, in one pass.

Jobs of a sweep that share a backbone and a task differ only in their prompts (length, init,
seed, optimiser settings, step budget). :mod:`repro.pack.plan` says which jobs may share a pack
(``pack_key``) and cuts a group that does not fit one GPU (``pack_memory``) into packs;
:mod:`repro.pack.job` runs one pack. Each member keeps its own run directory (lock, fingerprint,
``config.yaml``, ``metrics.jsonl``, ``best/``, ``last/``, ``result.json``, W&B run), written by
the same functions a solo job uses (:mod:`repro.job`, :mod:`repro.trainer`, :mod:`repro.rundir`);
the members train together in :mod:`repro.packed_trainer`. Members step on independently: a pack
resumed after a kill at which some members had checkpointed and others not simply continues
each from its own step; a finished member is skipped.

The Hydra entry is the ``packed`` launcher (``hydra_plugins/repro_packed_launcher``);
docs/packing.md has the details and the measurements.
"""
