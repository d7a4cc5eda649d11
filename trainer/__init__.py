"""Orchestration: ``train(cfg)`` runs the pipeline, ``load_model(path)`` reloads what it saved."""
from trainer.model_dir import load_model
from trainer.pipeline import train

__all__ = ["train", "load_model"]
