"""recsys-spark: a Spark-native offline pipeline for recommenders."""

__version__ = "0.1.0"
