"""FasterViT models: registry, implementation and checkpoint loading.

``create_model(name, pretrained=PATH, num_classes=, img_size=, ...)``, ``list_models()``,
``load_pretrained(model, path)`` and ``model_info(name)``; see docs/architecture.md. Imported on
first use, so ``fvt.models.hub`` and the variant table (``fvt.models.table``) load without torch.
"""

import typing as _typing

from .._lazy import lazy_attributes as _lazy_attributes

_LAZY = {
    "LoadReport": ".checkpoint", "load_pretrained": ".checkpoint", "safe_load": ".checkpoint",
    "FasterViT": ".faster_vit",
    "VARIANTS": ".registry", "build_model": ".registry", "create_model": ".registry", "list_models": ".registry",
    "model_info": ".registry", "register_all": ".timm_models",
}
__all__ = ["create_model", "list_models", "load_pretrained", "model_info", "safe_load", "LoadReport",
           "FasterViT", "build_model", "VARIANTS"]

if _typing.TYPE_CHECKING:
    from .checkpoint import LoadReport, load_pretrained, safe_load  # noqa: F401
    from .faster_vit import FasterViT  # noqa: F401
    from .registry import VARIANTS, build_model, create_model, list_models, model_info  # noqa: F401

__getattr__, __dir__ = _lazy_attributes(globals(), _LAZY)
