"""Demo checkpoints: RGB-T (MFNet) and RGB-D (SUN RGB-D), ViT-B and tiny."""
import os

import cv2
import numpy as np
import pytest

from models import load_gopt
from models.demo_checkpoint import SUNRGBD_CLASSES, demo_config, main as write_demo_checkpoint
from runtime import Segmenter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_configs_name_their_classes_and_statistics():
    t, d = demo_config("thermal"), demo_config("depth")
    assert (t.embed_dim, t.depth, t.num_classes, t.modality) == (768, 12, 9, "thermal")
    assert (d.embed_dim, d.depth, d.num_classes, d.modality) == (768, 12, 37, "depth")
    assert d.class_names == SUNRGBD_CLASSES and len(set(SUNRGBD_CLASSES)) == 37
    assert d.img_size[0] % 16 == 0 and d.img_size[1] % 16 == 0
    # Depth statistics are in metres over the valid pixels of the bundled frame at 1 mm per count.
    depth = cv2.imread(os.path.join(ROOT, "data", "samples", "esanet_depth.png"), cv2.IMREAD_UNCHANGED)
    metres = depth[depth > 0].astype(np.float64) * 1e-3
    assert d.aux_mean[0] == pytest.approx(metres.mean(), abs=0.05)
    assert d.aux_std[0] == pytest.approx(metres.std(), abs=0.05)
    with pytest.raises(ValueError, match="thermal' or 'depth"):
        demo_config("hha")


def test_tiny_rgbd_checkpoint_runs_on_the_bundled_pair(tmp_path):
    write_demo_checkpoint(["--modality", "depth", "--tiny", "-o", str(tmp_path / "d.pt")])
    model = load_gopt(tmp_path / "d.pt")
    assert model.config.untrained and model.config.num_classes == 37 and model.config.embed_dim == 64
    seg = Segmenter(tmp_path / "d.pt")
    rgb = cv2.imread(os.path.join(ROOT, "data", "samples", "esanet_rgb.png"), cv2.IMREAD_COLOR)
    depth = cv2.imread(os.path.join(ROOT, "data", "samples", "esanet_depth.png"), cv2.IMREAD_UNCHANGED)
    labels = seg.run(rgb, depth)
    assert labels.shape == depth.shape and labels.max() < 37
