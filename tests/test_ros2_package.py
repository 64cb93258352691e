"""The ROS 2 package without ROS: rclpy cannot be installed here, so the node is not run.
What can be checked is checked: the node and launch files parse, every runtime function the
node calls exists, the launch file passes exactly the node's parameters, and the SimCMF
input the node builds from a message pair."""
import ast
import importlib
import os

import numpy as np
import pytest

from runtime.ros.messages import simcmf_image

ROS2 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ros2")
NODE = os.path.join(ROS2, "mmseg_ros", "segmenter_node.py")
LAUNCH = os.path.join(ROS2, "launch", "segmenter.launch.py")


def parse(path):
    with open(path) as f:
        return ast.parse(f.read(), path)


def literal_dict(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found")


def test_node_calls_only_runtime_functions_that_exist():
    imported = [(n.module, a.name) for n in ast.walk(parse(NODE)) if isinstance(n, ast.ImportFrom)
                and n.module and n.module.startswith("runtime") for a in n.names]
    assert ("runtime.ros.worker", "SegmentWorker") in imported and ("runtime", "Segmenter") in imported
    for module, name in imported:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"


def test_launch_arguments_are_the_node_parameters():
    params = literal_dict(parse(NODE), "PARAMETERS")
    tree = parse(LAUNCH)
    for node in ast.walk(tree):  # ARGUMENTS holds types (str, float ...): compare names and defaults
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "ARGUMENTS":
            launch = {ast.literal_eval(k): ast.literal_eval(v.elts[0]) for k, v in zip(node.value.keys, node.value.values)}
    assert set(launch) == set(params) == {"model", "device", "rgb_topic", "aux_topic", "slop", "queue_size",
                                          "drop_stale", "topic_prefix", "points_topic"}
    for name, default in params.items():
        assert launch[name].lower() == str(default).lower(), name


def test_simcmf_image_from_a_pair():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    thermal = rng.integers(0, 255, (24, 32), dtype=np.uint8)
    depth = rng.integers(1, 5000, (24, 32), dtype=np.uint16)
    np.testing.assert_array_equal(simcmf_image({"modality": "rgbt", "in_chans": 4}, bgr, thermal),
                                  np.dstack([bgr, thermal]))
    np.testing.assert_array_equal(simcmf_image({"modality": "t", "in_chans": 1}, bgr, thermal), thermal)
    image = simcmf_image({"modality": "rgbd", "in_chans": 4, "minmax_channels": [3]}, bgr, depth)
    assert image.dtype == np.float32 and image.shape == (24, 32, 4)
    np.testing.assert_array_equal(image[..., 3], depth.astype(np.float32))
    metres = depth.astype(np.float32) / 1000
    metres[0, 0] = np.nan  # a REP 117 hole
    image = simcmf_image({"modality": "d", "in_chans": 1, "minmax_channels": [0]}, bgr, metres)
    assert image[0, 0] == 0 and np.isfinite(image).all()
    with pytest.raises(ValueError, match="takes 8-bit auxiliary images, got uint16"):
        simcmf_image({"modality": "rgbnir", "in_chans": 4}, bgr, depth)
    with pytest.raises(ValueError, match="differ in size"):
        simcmf_image({"modality": "rgbt", "in_chans": 4}, bgr, thermal[:20])
