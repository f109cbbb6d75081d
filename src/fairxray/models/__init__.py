"""Model zoo: the registry and every family. Importing this package registers all families.

Use :func:`create`, :func:`get_spec`, :func:`list_models` and :func:`weights_status`; never branch
on model names outside the family modules.
"""

from fairxray.models import (  # noqa: F401  (importing registers each family)
    biomedclip,
    biovil,
    chexzero,
    gloria,
    medclip,
    medsiglip,
    openclip,
    pubmedclip,
    raddino,
    toy,
)
from fairxray.models.base import ClipModel
from fairxray.models.registry import (
    ImageSpec,
    ModelSpec,
    WeightsStatus,
    create,
    get_spec,
    list_models,
    register,
    require_weights,
    weights_status,
)

__all__ = [
    "ClipModel",
    "ImageSpec",
    "ModelSpec",
    "WeightsStatus",
    "create",
    "get_spec",
    "list_models",
    "register",
    "require_weights",
    "weights_status",
]
