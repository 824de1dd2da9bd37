"""Item–item (ItemCF, Swing) and user–user (UserCF) similarity, exact and skew-proof.

Plain DataFrame→DataFrame functions; `job` wires them to the lake and the command line.
"""

from recsys_spark.events import DEFAULT_WEIGHTS, interest_weights
from recsys_spark.similarity.interactions import filtered_interactions
from recsys_spark.similarity.itemcf import itemcf_similarity
from recsys_spark.similarity.pairs import blocked_pairs
from recsys_spark.similarity.swing import swing_similarity
from recsys_spark.similarity.topk import both_directions, top_k
from recsys_spark.similarity.usercf import usercf_similarity

__all__ = [
    "DEFAULT_WEIGHTS",
    "blocked_pairs",
    "both_directions",
    "filtered_interactions",
    "interest_weights",
    "itemcf_similarity",
    "swing_similarity",
    "top_k",
    "usercf_similarity",
]
