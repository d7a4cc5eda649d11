"""The runtime: signals from the models the registry promoted, replayed (``dry``), paper-traded over a
replay (``paper``) or over live candles (``live-paper``), with risk guardrails.

    python -m trainer.runtime mode=dry coin=BTC data=files target.horizon=4

``trainer.runtime.session.run(cfg)`` is the Python entry point; the CLI is a thin layer over it.
"""
