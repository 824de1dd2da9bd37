"""Per-user ranked candidate lists from similarity tables, neighbours, popularity and vectors.

Shared by `evaluate` (which measures every channel on a held-out day) and `recommend` (which serves
them): one definition of what a channel's list is, so what is measured is what is served.
"""
