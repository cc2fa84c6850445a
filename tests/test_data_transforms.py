"""Preprocessing round trip, non-square sizes, eval resizing by crop_pct, ThreeAugment."""

import numpy as np
import torch

from fvt.config import Config
from fvt.data import Preprocessing, eval_transform, train_transform
from fvt.data.synthetic import solid


def test_preprocessing_round_trip_and_from_config():
    cfg = Config()
    cfg.model.img_size = [96, 64]
    cfg.aug.mean, cfg.aug.std, cfg.aug.crop_pct, cfg.aug.interpolation = [0.5] * 3, [0.25] * 3, 0.9, "bilinear"
    p = Preprocessing.from_config(cfg)
    assert p.input_size == (96, 64) and p.crop_pct == 0.9 and p.interpolation == "bilinear"
    d = p.to_dict()
    assert d == {"input_size": [96, 64], "mean": [0.5] * 3, "std": [0.25] * 3, "crop_pct": 0.9,
                 "interpolation": "bilinear"}
    assert Preprocessing.from_dict(d) == p
    cfg.model.img_size = None
    assert Preprocessing.from_config(cfg, default_size=(160, 160)).input_size == (160, 160)
    assert Preprocessing.from_config(cfg).input_size == (224, 224)


def test_non_square_train_and_eval_shapes_and_normalisation():
    p = Preprocessing(input_size=(48, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=1.0)
    img = solid((255, 0, 128), (70, 50))
    x = eval_transform(p)(img)
    assert x.shape == (3, 48, 32)
    expected = (torch.tensor([255, 0, 128]) / 255.0 - 0.5) / 0.5
    assert torch.allclose(x.mean((1, 2)), expected, atol=0.01)
    aug = Config().aug
    for three in (False, True):
        aug.three_augment = three
        assert train_transform(p, aug)(img).shape == (3, 48, 32)


def test_eval_center_crop_follows_crop_pct():
    # left quarter red, rest blue; a crop_pct of 0.5 keeps the centre half only, so no red survives
    a = np.zeros((60, 60, 3), np.uint8)
    a[:, :15] = (255, 0, 0)
    a[:, 15:] = (0, 0, 255)
    from PIL import Image

    img = Image.fromarray(a)
    ident = dict(mean=(0, 0, 0), std=(1, 1, 1), interpolation="bilinear")
    full = eval_transform(Preprocessing(input_size=(30, 30), crop_pct=1.0, **ident))(img)
    centre = eval_transform(Preprocessing(input_size=(30, 30), crop_pct=0.5, **ident))(img)
    assert full[0, :, :5].mean() > 0.9
    assert centre[0].max() < 0.05 and centre[2].min() > 0.95
