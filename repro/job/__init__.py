"""A job: one run directory, one prompt per task (``task=superglue`` trains the 8 SuperGLUE
prompts one after the other in ``<run_dir>/<task>/``).

    config ─► checkpoint ─► frozen backbone + tokenizer ─► per task: examples → tokens →
    prompt init → train (eval every N, keep best) → result.json

The rooms: :mod:`repro.job.experiment` (the job in its run directory: ``run_experiment``),
:mod:`repro.job.task` (one task, start to end), :mod:`repro.job.assets` (what a job builds and
loads before its first step), :mod:`repro.job.preemption` (a signal becomes a checkpoint and
exit code 75). ``python -m repro.run`` (:mod:`repro.run`) and the packed launcher
(:mod:`repro.pack`) run jobs through them.
"""
