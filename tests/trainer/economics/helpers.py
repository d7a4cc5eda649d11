"""Run settings shared by the end-to-end economics tests."""

FAST = ["trainer.num_threads=1", "logger=none"]
