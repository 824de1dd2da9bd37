"""MovieLens: ml-100k (`u.data`, `u.item`, `u.user`), ml-1m (`*.dat`) and the newer CSV releases.

Ratings become events: each rating is a `click` at the rating time, and a rating >= `like_threshold`
also adds a `like` at the same time (the key stays unique because the event differs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_spark.ingest.canonical import event_checks, string_csv, to_events
from recsys_spark.ingest.quarantine import (
    REASON,
    ROW,
    Parsed,
    blank,
    classify,
    malformed,
    raw_row,
    rejected_rows,
)

GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
NO_GENRE = ("unknown", "(no genres listed)")


@dataclass(frozen=True)
class Layout:
    """How one MovieLens file is laid out."""

    columns: tuple[str, ...]
    sep: str
    header: bool = False
    encoding: str = "UTF-8"
    quoted: bool = False  # only the CSV releases quote fields (titles with commas)


_DAT = dict(sep="::", encoding="ISO-8859-1")
LAYOUTS = {
    "u.data": Layout(("user_id", "item_id", "rating", "timestamp"), "\t"),
    "u.item": Layout(
        ("movie_id", "title", "release_date", "video_release_date", "imdb_url", *GENRES_100K),
        "|",
        encoding="ISO-8859-1",
    ),
    "u.user": Layout(("user_id", "age", "gender", "occupation", "zip_code"), "|"),
    "ratings.dat": Layout(("user_id", "movie_id", "rating", "timestamp"), **_DAT),
    "movies.dat": Layout(("movie_id", "title", "genres"), **_DAT),
    "users.dat": Layout(("user_id", "gender", "age", "occupation", "zip_code"), **_DAT),
    "ratings.csv": Layout(("userId", "movieId", "rating", "timestamp"), ",", header=True, quoted=True),
    "movies.csv": Layout(("movieId", "title", "genres"), ",", header=True, quoted=True),
}


def layout(path: str) -> tuple[str, Layout]:
    """Which MovieLens file this is, from its name (u.data, u.item, u.user, ratings.csv, ...)."""
    name = os.path.basename(path.rstrip("/")).lower()
    if name not in LAYOUTS:
        raise ValueError(f"{path}: not a known MovieLens file name ({', '.join(LAYOUTS)})")
    return name, LAYOUTS[name]


def read(spark: SparkSession, path: str) -> tuple[str, DataFrame]:
    name, lay = layout(path)
    # The pipe/tab/:: files do not quote: a stray " in a title must not swallow the separators.
    df = string_csv(
        spark,
        path,
        list(lay.columns),
        sep=lay.sep,
        header=str(lay.header).lower(),
        encoding=lay.encoding,
        quote='"' if lay.quoted else "",
    )
    return name, df.withColumn(ROW, raw_row(list(lay.columns)))


def parse_ratings(
    spark: SparkSession, path: str, *, run_id: str, min_ts: str, max_ts: str, like_threshold: float = 4.0
) -> Parsed:
    name, df = read(spark, path)
    user, item = LAYOUTS[name].columns[:2]
    df = df.withColumns(
        {
            "user_id": F.col(user),
            "item_id": F.col(item),
            "event": F.lit("click"),
            "ts": F.col("timestamp"),
            "session_id": F.lit(None).cast("string"),
            "dwell_ms": F.lit(None).cast("string"),
        }
    )
    rating = F.trim("rating").try_cast("double")
    checks = {**event_checks(df, min_ts, max_ts), "unparseable_rating": rating.isNull()}
    staged = classify(df, checks)
    good = staged.filter(F.col(REASON).isNull())
    likes = good.filter(rating >= F.lit(like_threshold)).withColumn("event", F.lit("like"))
    valid = to_events(good.unionByName(likes))
    return Parsed(staged, valid, rejected_rows(staged, "events", run_id))


def parse_items(spark: SparkSession, path: str, *, run_id: str) -> Parsed:
    """u.item (genre flags, release date) or movies.csv/movies.dat (pipe-separated genres, year in title)."""
    name, df = read(spark, path)
    item = LAYOUTS[name].columns[0]
    if name == "u.item":
        flagged = [F.when(F.trim(F.col(f"`{g}`")) == "1", F.lit(g)) for g in GENRES_100K]
        genres = F.filter(F.array(*flagged), lambda g: g.isNotNull())
        created = F.try_to_timestamp(F.trim("release_date"), F.lit("dd-MMM-yyyy"))
    else:
        genres = F.split(F.trim("genres"), r"\|")
        year = F.regexp_extract(F.trim("title"), r"\((\d{4})[^()]*\)$", 1)
        created = F.when(
            year != "", F.make_timestamp(year.cast("int"), F.lit(1), F.lit(1), F.lit(0), F.lit(0), F.lit(0))
        )
    genres = F.filter(genres, lambda g: (g != "") & ~g.isin(*NO_GENRE))
    staged = classify(df, {"wrong_column_count": malformed(), "missing_item_id": blank(item)})
    valid = staged.filter(F.col(REASON).isNull()).select(
        F.trim(item).alias("item_id"),
        F.try_element_at(genres, F.lit(1)).alias("category"),  # null when there is no genre
        F.lit(None).cast("string").alias("author_id"),
        F.when(F.size(genres) > 0, genres).alias("tags"),
        created.alias("created_ts"),
    )
    return Parsed(staged, valid, rejected_rows(staged, "items", run_id))


def age_bucket(age: Column) -> Column:
    # ml-1m stores the lower bound of its own buckets (1, 18, 25, 35, 45, 50, 56): they land in ours.
    return (
        F.when(age.isNull() | (age < 0), None)
        .when(age < 18, "under-18")
        .when(age < 25, "18-24")
        .when(age < 35, "25-34")
        .when(age < 45, "35-44")
        .when(age < 55, "45-54")
        .otherwise("55+")
    )


def parse_users(
    spark: SparkSession, path: str, *, run_id: str, first_seen: DataFrame | None = None
) -> Parsed:
    """u.user or users.dat. `first_seen` (user_id, signup_ts), e.g. each user's first rating, fills signup_ts."""
    _, df = read(spark, path)
    staged = classify(df, {"wrong_column_count": malformed(), "missing_user_id": blank("user_id")})
    gender = F.lower(F.trim("gender"))
    zip_code = F.upper(F.trim("zip_code"))
    valid = staged.filter(F.col(REASON).isNull()).select(
        F.trim("user_id").alias("user_id"),
        F.when(gender.isin("f", "m"), gender).otherwise(F.lit("u")).alias("gender"),
        age_bucket(F.trim("age").try_cast("int")).alias("age_bucket"),
        # US zip codes' first digit is one of ten national areas; Canadian codes keep their letter.
        F.when(zip_code != "", F.substring(zip_code, 1, 1)).alias("region"),
    )
    if first_seen is not None:
        valid = valid.join(first_seen, "user_id", "left")
    else:
        valid = valid.withColumn("signup_ts", F.lit(None).cast("timestamp"))
    return Parsed(staged, valid, rejected_rows(staged, "users", run_id))


def first_ratings(events: DataFrame) -> DataFrame:
    """Each user's first rating time: MovieLens has no sign-up time, this is the closest it records."""
    return events.groupBy("user_id").agg(F.min("ts").alias("signup_ts"))
