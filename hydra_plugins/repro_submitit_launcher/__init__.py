"""hydra-submitit-launcher's local and SLURM launchers, made to stop on Ctrl-C: see
submitit_launcher.py."""
