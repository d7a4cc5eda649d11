"""Orchestration: ``train(cfg)`` runs the pipeline and returns its ``RunResult`` (trainer.result; its
``to_json()`` is the run's result.json), ``load_model(path)`` reloads what it saved.

Both are imported on first use, so light tools (``python -m trainer.registry``) never load torch."""

__all__ = ["train", "load_model"]


def __getattr__(name: str):
    if name == "train":
        from trainer.pipeline import train

        return train
    if name == "load_model":
        from trainer.model_dir import load_model

        return load_model
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
