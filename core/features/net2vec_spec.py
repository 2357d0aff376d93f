"""Net2Vec's settings, declared once (the page's widgets, the CLI flags, the result key, the warm-up, the report
line). Its subject is a folder: the image paths, keyed by :func:`core.keys.images_key`."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..spec import Setting, Technique
from .net2vec import DEFAULT_SIZE, ConceptSource

SIZES = (14, 28, 56)          # the page's analysis grids (the CLI takes any side of at least 2)
ITERATIONS = 300              # optimisation steps per concept

SETTINGS = (
    Setting("layer", str, "spatial layer name (see the layer catalogue)", label="Layer", layer=True,
            required=True),
    Setting("concepts", str, "'colors' (colour terms named from pixels) or a folder of masks "
                             "MASK_FOLDER/<concept>/<image stem>.png", default=ConceptSource.COLORS.value,
            metavar="colors|MASK_FOLDER", required=True, widget="none"),
    Setting("size", int, "analysis grid", label="Analysis grid", among=SIZES, default=DEFAULT_SIZE,
            widget="select_slider", strict=False),
    Setting("iterations", int, "optimisation steps per concept", low=1, default=ITERATIONS, widget="none",
            strict=False),
)


def run_net2vec(model, paths: Sequence[str], values: Mapping[str, object], *, progress=None) -> tuple:
    """(fits, used paths (absolute), errors (one line per unreadable image)) of Net2Vec over the images at
    ``paths``. Raises ImageError (no readable image, mask folder), ValueError (no concepts)."""
    import torch

    from ..images import ImageError, load_image, preprocess
    from . import net2vec as n2v

    good, errors = [], []
    for p in paths:
        try:
            good.append((str(Path(p).resolve()), preprocess(load_image(p), model.card.data_config)))
        except ImageError as e:
            errors.append(str(e))
    if not good:
        raise ImageError("no readable images in the folder")
    x = torch.stack([inp.tensor for _, inp in good])
    size, concepts = int(values["size"]), str(values["concepts"])
    if concepts == ConceptSource.COLORS.value:
        masks = n2v.colour_concepts(x, size=size)
    else:
        masks = n2v.load_concept_masks(concepts, [p for p, _ in good], size=size)
    fits = n2v.net2vec(model, x, str(values["layer"]), masks, size=size, iterations=int(values["iterations"]),
                       progress=progress)
    return fits, tuple(p for p, _ in good), tuple(errors)


NET2VEC = Technique(
    "net2vec", "Net2Vec concepts",
    "per concept, a weight vector over a layer's channels that segments it, against the best single channel",
    SETTINGS, run_net2vec, subject="folder", command="net2vec", prefix="lens_n2v", page="net2vec", warm=True)
