"""The packed launcher of repro (hydra/launcher=packed): see packed_launcher.py."""
