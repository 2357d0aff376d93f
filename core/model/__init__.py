"""The model wrapper (normalisation inside, RGB [0, 1] NCHW in) and its loading: hub, files, embedded weights."""
from .loading import LensModel, ModelCard, ModelLoadError, load_model  # noqa: F401
