"""The licence of the weights an export is made from: the official FasterViT weights are NVIDIA's,
under the NVIDIA Source Code License-NC (non-commercial), and so is every model fine-tuned from them.
fvt's own code is Apache-2.0; the weights are not, so the licence travels in every export's metadata
(``weights_license``) and model card.

Weights are official when they were loaded as ``official``, from the official Hub repository or from a
file with a published official name, or when the checkpoint says so itself (its ``weights_license`` key,
or a run whose ``--pretrained`` was one of these)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

LICENSE_KEY = "weights_license"  # the checkpoint / export metadata key


def official_weights_license() -> dict:
    from ..models.hub import OFFICIAL_REPO

    return {"name": "NVIDIA Source Code License-NC", "url": "https://github.com/NVlabs/FasterViT/blob/main/LICENSE",
            "weights": f"official FasterViT ImageNet weights ({OFFICIAL_REPO}, NVlabs/FasterViT)",
            "note": "non-commercial use only; models fine-tuned from these weights inherit this licence"}


def names_official_weights(source) -> bool:
    """``official``, the official Hub repository, or a file / URL with a published official file name."""
    from ..models.hub import OFFICIAL_REPO, PUBLISHED

    if not isinstance(source, (str, Path)) or not str(source):
        return False
    text = str(source)
    if text == "official":
        return True
    if text.startswith("hf-hub:") and text[len("hf-hub:"):].partition(":")[0] == OFFICIAL_REPO:
        return True
    name = Path(urlparse(text).path if "://" in text else text).name
    return name in {p.file for p in PUBLISHED.values()}


def of_model(info: dict) -> Optional[dict]:
    """The licence record for a loaded model's ``info`` (see ``LoadedModel.info``), or None when none is known."""
    own = info.get(LICENSE_KEY)
    if isinstance(own, dict):
        return dict(own)
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    pretrained = (config.get("model") or {}).get("pretrained") if isinstance(config.get("model"), dict) else None
    if names_official_weights(info.get("source")) or names_official_weights(pretrained):
        return official_weights_license()
    return None
