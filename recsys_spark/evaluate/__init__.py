"""Offline evaluation: ranking and classification metrics, recall-channel candidates, the report."""
