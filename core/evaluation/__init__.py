"""Faithfulness and sanity of attribution maps: deletion/insertion, ROAD, the cascading
model-parameter randomisation test, pointing game and energy-in-mask. No streamlit; see docs/faithfulness.md."""
from .curves import Curves, DeletionBaseline, auc, curves, pixel_order, rise_blur, step_counts
from .evaluate import ALL_METRICS, MAP_METHOD, Evaluation, Metric, evaluate, method_explainer, parse_metrics
from .pointing import Pointing, alpha_mask, mask_file, pointing
from .randomisation import Randomisation, cascade_groups, randomisation
from .road import Road, impute, road

__all__ = ["ALL_METRICS", "MAP_METHOD", "Curves", "DeletionBaseline", "Evaluation", "Metric", "Pointing",
           "Randomisation", "Road", "alpha_mask", "auc", "cascade_groups", "curves", "evaluate", "impute",
           "mask_file", "method_explainer", "parse_metrics", "pixel_order", "pointing", "randomisation", "rise_blur",
           "road", "step_counts"]
