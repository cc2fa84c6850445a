"""FasterViT models: registry, implementation and checkpoint loading.

``create_model(name, pretrained=PATH, num_classes=, img_size=, ...)``, ``list_models()``,
``load_pretrained(model, path)`` and ``model_info(name)``; see docs/architecture.md.
"""

from .checkpoint import LoadReport, load_pretrained, safe_load
from .faster_vit import FasterViT
from .registry import VARIANTS, build_model, create_model, list_models, model_info
from .timm_models import register_all

register_all()  # the variants in timm's registry: timm.create_model("faster_vit_0_224") builds fvt's

__all__ = ["create_model", "list_models", "load_pretrained", "model_info", "safe_load", "LoadReport",
           "FasterViT", "build_model", "VARIANTS"]
