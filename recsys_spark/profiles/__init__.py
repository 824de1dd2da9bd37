"""User interest profiles: time-decayed category, author and tag weights (`user_profiles`).

Plain DataFrame→DataFrame functions in `interests`; `job` wires them to the lake and the command line.
"""

from recsys_spark.profiles.interests import ProfileParams, decayed_interests, tag_idf, user_profiles

__all__ = ["ProfileParams", "decayed_interests", "tag_idf", "user_profiles"]
