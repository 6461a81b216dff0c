#!/bin/sh
# Regenerate the toy results from the shipped toy checkpoints (repro/toy_models/): the four toy
# Figure 3 panels in one sweep (sweeps/toy/fig3_all.yaml: every distinct run once, in
# multirun/toy_figure3/), the run frame, the four panels, the measured effects and the
# invalid-output counts. CPU, no network; JOBS single-threaded jobs at a time (default 2, one per
# core of our machines) through the local launcher. Run from the repository root:
#   sh sweeps/toy/run_all.sh            # or JOBS=4 sh sweeps/toy/run_all.sh
# It writes to OUT (default results/toy_rerun/), beside the tracked results/toy/, and ends by
# saying how many scores equal the shipped ones; OUT=results/toy replaces the tracked files.
# The scores repeat bit for bit on any x86-64 CPU with AVX2 (repro.numerics pins the kernels;
# docs/fidelity.md says where they cannot). A relaunch skips finished jobs. To rebuild the
# checkpoints themselves first (docs/toy_world.md; we ran --sizes toy_xl and --sizes toy_small
# toy_base toy_large side by side):
#   python -m repro.toyworld build
set -e
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
JOBS="${JOBS:-2}"
OUT="${OUT:-results/toy_rerun}"
echo "sweeps/toy/run_all.sh: writing to $OUT/ (OUT=results/toy replaces the shipped results)"
python -m repro.run -m --config-dir sweeps/toy --config-name fig3_all \
  hydra/launcher=local hydra.launcher.gpus_per_node=0 hydra.sweeper.max_batch_size="$JOBS"
mkdir -p "$OUT"
python -m repro.collect multirun/toy_figure3 -o "$OUT/runs.csv" --overwrite
# figure3{a,b,c,d}_*.png + the 2x2 figure3.png, effects.csv, invalid_outputs.csv, summary.md
python -m repro.toyworld report "$OUT/runs.csv" -o "$OUT"
if [ "$OUT" != "results/toy" ]; then  # how many of the shipped scores this machine repeats
  python -m repro.collect.compare results/toy/runs.csv "$OUT/runs.csv" || true
fi
