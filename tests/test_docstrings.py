"""The algorithm modules document their public API numpy-style and cite the papers they implement.

Every public function and class defined in these modules has a Parameters and a Returns section
(classes: Parameters), the public methods of the torch models too, with tensor shapes; each module
names its papers in a References section of its module docstring.
"""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

# module -> strings its References section must contain (the papers of its algorithms)
MODULES: dict[str, tuple[str, ...]] = {
    "recsys_spark.similarity.swing": ("Yang", "Large Scale Product Graph Construction"),
    "recsys_spark.similarity.itemcf": ("Sarwar", "Linden"),
    "recsys_spark.similarity.usercf": ("Breese", "inverse user frequency"),
    "recsys_spark.similarity.topk": (),
    "recsys_spark.similarity.interactions": (),
    "recsys_spark.similarity.pairs": (),
    "recsys_spark.events": (),
    "recsys_spark.graph.walks": ("Perozzi", "DeepWalk", "Grover", "node2vec", "KnightKing"),
    "recsys_spark.graph.sgns": ("Mikolov", "negative sampling"),
    "recsys_spark.graph.item_graph": (),
    "recsys_spark.graph.embed": (),
    "recsys_spark.graph.quality": (),
    "recsys_spark.samples.features": (),
    "recsys_spark.samples.recall": (),
    "recsys_spark.samples.ranking": (),
    "recsys_spark.train.two_tower": ("Covington", "Sampling-Bias-Corrected", "logQ"),
    "recsys_spark.train.ranker": ("Deep Interest Network", "DCN V2", "Multi-gate Mixture-of-Experts"),
    "recsys_spark.evaluate.metrics": ("Mann", "Järvelin", "Ziegler", "Zhou", "Castells"),
    "recsys_spark.evaluate.cold_start": ("Schein", "Cold-Start Recommendations"),
    "recsys_spark.streaming.incremental": (),
    "recsys_spark.stats": ("Beta prior", "Click-Through Rate Estimation"),
    "recsys_spark.lake.delta": (),
    "recsys_spark.lake.commit": (),
    "recsys_spark.distributed": (),
    "recsys_spark.train.registry": (),
    "recsys_spark.profiles.interests": ("Salton", "Term-weighting approaches"),
    "recsys_spark.experiments.buckets": ("Kohavi", "Overlapping Experiment Infrastructure"),
    "recsys_spark.experiments.business": ("Kohavi", "Controlled experiments on the web"),
    "recsys_spark.train.scoring": (),
    "recsys_spark.recommend.rank": ("Cormack", "Reciprocal rank fusion"),
    "recsys_spark.recommend.fusion_weights": ("Cormack", "Järvelin"),
    "recsys_spark.candidates.exclusions": (),
    "recsys_spark.candidates.cold_items": ("Wang", "Billion-scale Commodity Embedding"),
    "recsys_spark.candidates.cohorts": ("Lam", "cold-start"),
    "recsys_spark.candidates.baselines": ("Hu", "Implicit Feedback", "Steck", "Embarrassingly Shallow"),
    "recsys_spark.generate.truth": (),
    "recsys_spark.evaluate.references": (),
    "recsys_spark.profiles.stored": (),
    "recsys_spark.recommend.diversity": ("Carbonell", "MMR", "Chen", "Fast Greedy MAP Inference"),
    "recsys_spark.recommend.rules": (),
    "recsys_spark.recommend.rerank": (),
    "recsys_spark.train.serving": (),
    "recsys_spark.recommend.recall": (),
    "recsys_spark.recommend.filters": ("Bloom",),
    "recsys_spark.recommend.bloom": ("Bloom", "1970"),
    "recsys_spark.recommend.ann": ("Johnson", "Douze", "Jégou", "Malkov", "Yashunin"),
}
# Job plumbing, documented by their configs (whose docstrings are the CLI's --help text).
SKIP = {
    "recsys_spark.stats": {"run", "validate", "StatsConfig"},
    "recsys_spark.graph.embed": {"run", "EmbedConfig", "latest_walks_method", "mllib_word2vec"},
    "recsys_spark.experiments.buckets": {"run", "BucketsConfig"},
    "recsys_spark.experiments.business": {"run", "BusinessMetricsConfig"},
}


def has_section(doc: str | None, name: str) -> bool:
    return bool(doc) and re.search(rf"^\s*{name}\n\s*-{{3,}}\s*$", doc, re.MULTILINE) is not None


def takes_arguments(fn) -> bool:
    params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
    return bool(params)


def problems(name: str, obj, torch_model: bool = False) -> list[str]:
    """What is missing from the docstring of one public function or class (empty: nothing)."""
    doc = inspect.getdoc(obj)
    found: list[str] = []
    if inspect.isclass(obj):
        init = obj.__dict__.get("__init__")
        fields = getattr(obj, "__dataclass_fields__", None)
        if (fields or (init and takes_arguments(init))) and not has_section(doc, "Parameters"):
            found.append(f"{name}: no Parameters section")
        if torch_model:
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member) or isinstance(member, type):
                    continue
                found += problems(f"{name}.{attr}", member)
                if attr in ("forward", "score_logits", "encode_user") and "(batch" not in (
                    inspect.getdoc(member) or ""
                ):
                    found.append(f"{name}.{attr}: no tensor shapes")
        return found
    if takes_arguments(obj) and not has_section(doc, "Parameters"):
        found.append(f"{name}: no Parameters section")
    if not has_section(doc, "Returns"):
        found.append(f"{name}: no Returns section")
    return found


def public_members(module):
    for name, obj in vars(module).items():
        if name.startswith("_") or name in SKIP.get(module.__name__, ()):
            continue
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
            yield name, obj


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_public_api_has_parameters_and_returns(module_name):
    module = importlib.import_module(module_name)
    torch_model = module_name.startswith("recsys_spark.train.")
    members = list(public_members(module))
    assert members, f"{module_name} has no public functions or classes"
    missing = [p for name, obj in members for p in problems(f"{module_name}.{name}", obj, torch_model)]
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("module_name", sorted(m for m, cites in MODULES.items() if cites))
def test_algorithm_modules_cite_their_papers(module_name):
    doc = importlib.import_module(module_name).__doc__ or ""
    assert has_section(doc, "References"), f"{module_name}: no References section"
    references = " ".join(doc[doc.index("References") :].split())  # titles wrap across lines
    missing = [c for c in MODULES[module_name] if c.lower() not in references.lower()]
    assert not missing, f"{module_name} References do not cite {missing}"


def test_the_check_fails_without_a_docstring():
    def undocumented(x: int) -> int:
        return x

    def documented(x: int) -> int:
        """Identity.

        Parameters
        ----------
        x : int
            Anything.

        Returns
        -------
        int
            `x`.
        """
        return x

    assert problems("undocumented", undocumented) == [
        "undocumented: no Parameters section",
        "undocumented: no Returns section",
    ]
    assert problems("documented", documented) == []
