"""The recommendation funnel, precomputed daily: recall -> rank -> rerank (DESIGN.md "Recommendations")."""
