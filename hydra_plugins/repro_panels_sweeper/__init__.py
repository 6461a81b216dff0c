"""The panel sweeper of repro (hydra/sweeper=panels): see panels_sweeper.py."""
