"""The activation index (maximally activating patches): :mod:`.topk` (streaming top-k per channel), :mod:`.build`
(indexing a folder, incrementally), :mod:`.store` (the on-disk format), :mod:`.query` (opening and reading)."""
from .build import (CACHE_ROOT, DEFAULT_TOP_K, MANIFEST, BuildResult, build_index, channel_map,  # noqa: F401
                    default_directory, default_layers)
from .query import (ActivationIndex, ChannelHit, IndexCorrupt, IndexedImage, IndexStale, Patch,  # noqa: F401
                    check_model, open_index, weights_fingerprint)
