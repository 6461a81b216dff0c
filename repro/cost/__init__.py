"""What a job or a sweep will cost, from the config alone: no weights are read.

``python -m repro.run ... dry_run=true`` prints one job's estimate and exits;
``python -m repro.cost [-m] [--config-dir D --config-name N] overrides...`` expands a sweep the
way Hydra's basic sweeper does and prints one line per group of jobs that cost the same (by
model size, then the sweep's other axes that change the cost), a subtotal per size and the total
(``--jobs``: one line per job).

The rooms: :mod:`repro.cost.plan` expands the command into its jobs,
:mod:`repro.cost.report` prints them (per job, in groups, the total), :mod:`repro.cost.packed`
prices the sweep packed, :mod:`repro.cost.cli` is the command. The arithmetic itself is
:mod:`repro.estimate` (FLOPs, memory, GPU-hours) and :mod:`repro.memory` (does a job fit its
GPU), which the job, ``trainer.grad_accum=auto`` and the packer use too.
"""
