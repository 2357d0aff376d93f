"""The similarity overlays' settings, declared once (page widgets, CLI flag, result key, warm-up, report line).

The computation is one image's unit-normalised features at a layer (:data:`SIMILARITY`: its only setting is the
layer); every click is then a dot product. The second image, the colour stretch and the query point are the
page's view settings (:data:`VIEW`): they change no stored result. The CLI's ``--other`` (any image path) and
``--at X,Y`` (required: a one-shot command has no point to start from) are written by the command itself.
"""
from __future__ import annotations

from typing import Mapping

from ..spec import Setting, Technique

SIMILARITY_OTHER = "coffee.jpg"  # the page's default second image (a sample photo)
NO_OTHER = "(none)"              # the second-image choice that compares within the image only

LAYER = Setting("layer", str, "spatial layer name (see the layer catalogue; default: the model's default layer)",
                label="Layer", layer=True)

OTHER = Setting("other", str, "compare with this sample photo's positions too", label="Second image",
                among=lambda c: (NO_OTHER, *c.get("others", ())), default=SIMILARITY_OTHER, cli=False)
STRETCH = Setting("stretch", bool, "deep layers are alike almost everywhere (cosines near 1): stretching shows the "
                  "differences; off shows the absolute scale, blue -1 to red +1",
                  label="Stretch colours to each map's range", default=True, widget="toggle", cli=False)
X = Setting("x", int, "query point, model-input pixels", label="x (model-input pixels)", low=0,
            high=lambda c: c["width"] - 1, default=lambda c: c["width"] // 2, cli=False)
Y = Setting("y", int, "query point, model-input pixels", label="y (model-input pixels)", low=0,
            high=lambda c: c["height"] - 1, default=lambda c: c["height"] // 2, cli=False)
VIEW = (OTHER, STRETCH, X, Y)
"""The page's view settings; their context: ``others`` (the sample photos' names), ``width``, ``height``."""


def run_features(model, x, values: Mapping[str, object], *, progress=None):
    """:class:`core.features.similarity.LayerFeatures` of one image ``x`` (3, H, W) in [0, 1] at the values'
    layer (one forward pass)."""
    from . import similarity

    return similarity.layer_features(model, x, values["layer"])


SIMILARITY = Technique(
    "similarity", "Similarity overlays",
    "which positions, here and in another image, a layer finds alike (cosine of feature vectors)",
    (LAYER,), run_features, command="similarity", prefix="lens_sim", page="similarity", warm=True)
