"""Candles in, model-ready matrices out: providers, validation, features, labels, splits, windows."""
