"""Feature attribution: which pixels made the model say this class.

``attribute(model, x, target, method=...)`` is the one entry point; :data:`REGISTRY` names the methods. Method
functions are reached through their modules (``core.attribution.smoothgrad.smoothgrad``) so that a package
attribute never hides a module of the same name.
"""
from .registry import (REGISTRY, Attribution, Base, Baseline, Engine, Fill, MethodSpec, NoiseType,  # noqa: F401
                       NotApplicable, Option, Precision, Sign, attribute, native_bf16, register, unregister)
