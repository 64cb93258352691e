"""ROS 2 without a ROS install: ``messages.py`` (sensor_msgs Image / CompressedImage to and
from numpy), ``bags.py`` (pairs read from MCAP / sqlite3 / ROS 1 bags by header stamp, label
maps written back as a bag), ``stamps.py`` (header stamps read in place) and ``worker.py``
(segmentation off a node's callback thread, for the ROS 2 node in ``ros2/``)."""
