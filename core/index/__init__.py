"""The activation index (maximally activating patches): :mod:`.topk` (streaming top-k per channel), :mod:`.build`
(indexing a folder, incrementally), :mod:`.store` (the on-disk format), :mod:`.query` (opening and reading)."""
from .build import (DEFAULT_TOP_K, ENGINES, MANIFEST, BuildResult, build_index,  # noqa: F401
                    channel_map, default_directory, default_layers)
from .query import (ActivationIndex, ChannelHit, IndexCorrupt, IndexedImage, IndexStale,  # noqa: F401
                    IndexSummary, NoRelevance, Patch, check_model, open_index, summarize)
