"""ROS 2 shell around mmseg-deploy's runtime: the ``segmenter`` node (segmenter_node.py)."""
