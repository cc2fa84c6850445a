"""fvt - the FasterViT toolkit.

Importing fvt registers its FasterViT variants in timm's model registry, so
``timm.create_model("faster_vit_0_224")`` builds fvt's implementation afterwards.
"""

__version__ = "0.1.0"

from .models import create_model, list_models, load_pretrained  # noqa: E402,F401


def __getattr__(name):
    # Heavier, optional entry points are imported on first use.
    if name == "Classifier":
        from .evaluation.predict import Classifier

        return Classifier
    raise AttributeError(f"module 'fvt' has no attribute {name!r}")
