"""The registry of techniques (:class:`core.spec.Technique`), besides the attribution methods' own registry.

Each technique module declares its ``Technique`` next to its function; :data:`TECHNIQUES` lists them. A plug-in
calls :func:`register`: the generic Techniques page, ``python -m core run NAME`` (flags generated from the
settings), the warm-up and the report pick it up with no other edit.
"""
from __future__ import annotations

from .attack.spec import ATTACK, EVIDENCE, MIN_EPS
from .audit.spec import AUDIT, FIT_HEAD
from .concepts.spec import CONCEPTS, DELETION
from .errors.spec import ERRORS, MISTAKE_MAPS, SEPARATING
from .evaluation.spec import COMPARE, EVALUATION
from .features.featurevis_spec import FEATUREVIS, FILTERS, INTERACTION
from .features.net2vec_spec import NET2VEC
from .features.similarity_spec import SIMILARITY
from .perturbation.spec import MASKS
from .report.spec import REPORT
from .memo import add_to
from .spec import Technique

TECHNIQUES: dict[str, Technique] = {t.name: t for t in (
    ATTACK, MIN_EPS, EVIDENCE, MASKS, SIMILARITY, FEATUREVIS, INTERACTION, FILTERS, NET2VEC, ERRORS, MISTAKE_MAPS,
    SEPARATING, EVALUATION, COMPARE, REPORT, CONCEPTS, DELETION, AUDIT, FIT_HEAD)}


def register(technique: Technique, *, replace_existing: bool = False) -> Technique:
    """Add ``technique`` to :data:`TECHNIQUES`.

    Raises:
        ValueError: the name is taken (unless ``replace_existing``).
    """
    return add_to(TECHNIQUES, technique.name, technique, "a technique", replace_existing=replace_existing)


def unregister(name: str) -> None:
    TECHNIQUES.pop(name, None)


def get(name: str) -> Technique:
    """The technique registered as ``name``. Raises ValueError naming the registered ones."""
    try:
        return TECHNIQUES[name]
    except KeyError:
        raise ValueError(f"unknown technique {name!r}; choose from {', '.join(TECHNIQUES)}") from None
