"""Fast training settings and synthetic candles for the symbol-name tests."""

import pandas as pd

from data.synthetic import generate

TINY = [
    "model=lightgbm",
    "model.n_estimators=20",
    "trainer.num_threads=1",
    "logger=none",
    "eval.leakage.shuffled_control=false",
]


def synthetic_candles(symbol: str = "ETH", rows: int = 3000) -> pd.DataFrame:
    return generate([symbol], rows, seed=3).candles[symbol]
