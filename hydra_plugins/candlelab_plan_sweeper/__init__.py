"""candlelab's plan sweeper for Hydra (`python train.py -m hydra/sweeper=plan`): runs a training plan's jobs,
CPU stage then GPU stage, resumably. See ``plan_sweeper`` for the whole story."""
