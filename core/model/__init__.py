"""The model: the wrapper every technique works through (normalisation inside, RGB [0, 1] NCHW in) and its loading.

Modules: :mod:`.wrapper` (LensModel, ModelCard, wrap), :mod:`.loading` (load_model), :mod:`.hub` (hub probe and
download), :mod:`.checkpoints` (local weights files), :mod:`.embedded` (the offline EfficientNet-Lite0),
:mod:`.predict` (top-k classes).
"""
from .embedded import EMBEDDED_ARCH, EMBEDDED_NAME  # noqa: F401
from .hub import default_pretrained_name, list_pretrained_tags  # noqa: F401
from .loading import (CONVNEXT_MODELS, CONVNEXT_V2_MODELS, DEFAULT_MODEL, OTHER_CNNS, TRANSFORMER_MODELS,  # noqa: F401
                      load_model)
from .wrapper import LensModel, ModelCard, ModelLoadError, WeightsSource, wrap  # noqa: F401
