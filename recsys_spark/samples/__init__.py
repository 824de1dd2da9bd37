"""Training sets for the recall (two-tower) and ranking models, built by `recsys-spark samples`."""
