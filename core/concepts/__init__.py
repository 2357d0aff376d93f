"""Concepts: concept relevance on our LRP (:mod:`.relevance`) and its settings (:mod:`.spec`)."""
from .relevance import (ChannelRelevance, ConditionalMaps, Concepts, channel_relevance, concepts,
                        conditional_maps, resolve_layer)

__all__ = ["ChannelRelevance", "ConditionalMaps", "Concepts", "channel_relevance", "concepts", "conditional_maps",
           "resolve_layer"]
