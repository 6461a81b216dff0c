#!/bin/sh
# Regenerate results/toy/ from the shipped toy checkpoints (repro/toy_models/): the four toy
# Figure 3 sweeps (one shared directory, multirun/toy_figure3/), the run frame, the four panels,
# the measured effects and the invalid-output counts. CPU, no network; about 70 CPU-minutes of jobs
# of our 2-core machines. Run from the repository root:
#   sh sweeps/toy/run_all.sh
# A relaunch skips finished jobs. To rebuild the checkpoints themselves first (~30 min; we ran --sizes toy_large and --sizes toy_small toy_base side by side):
#   python -m repro.toyworld build
set -e
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
for panel in fig3a_prompt_len fig3b_init fig3c_objective fig3d_lm_adapt_steps; do
  python -m repro.run -m --config-dir sweeps/toy --config-name "$panel"
done
python -m repro.collect multirun/toy_figure3 -o results/toy/runs.csv
# figure3{a,b,c,d}_*.png + the 2x2 figure3.png, effects.csv, invalid_outputs.csv, summary.md
python -m repro.toyworld report results/toy/runs.csv -o results/toy
