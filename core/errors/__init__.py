"""Error analysis: a labelled folder, the model's mistakes, and why it made them.

:mod:`.dataset` reads an ImageFolder tree or a CSV of ``file,label``; :mod:`.evaluate` predicts (with an on-disk
cache per image hash and model, :mod:`.cache`) and gives the confusion matrix, per-class precision/recall and
the mistakes; :mod:`.explain` the contrastive map and the channels that separate a confusion cell's mistakes
from the true class's correct images; :mod:`.demo` a small fine-tuned head to try it offline.
"""
