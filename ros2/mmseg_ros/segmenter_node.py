"""ROS 2 node ``segmenter``: two camera topics in, segmentation masks out.

A thin shell over tested functions of the ``runtime`` package: message conversions
(``runtime.ros.messages``), the worker thread with its bounded, oldest-dropping queue and
statistics (``runtime.ros.worker``), and ``runtime.Segmenter``. rclpy, message_filters and
the message packages come from a ROS 2 (Humble / Jazzy) installation.

Subscribes ``rgb_topic`` and ``aux_topic`` (``sensor_msgs/msg/Image``, or ``CompressedImage``
when the topic ends in ``/compressed`` or ``/compressedDepth``), pairs them with
``message_filters.ApproximateTimeSynchronizer`` (``slop`` seconds), segments off the executor
thread, and publishes with the RGB message's header:

- ``/<topic_prefix>/raw_segmentation_mask``: mono8 class ids (SimCMF: 0 / 1)
- ``/<topic_prefix>/colored_segmentation_mask``: bgr8, the classes over the colour frame
- ``/diagnostics``: ``diagnostic_msgs/msg/DiagnosticArray`` once a second (fps, latency
  percentiles, processed / dropped / failed pairs)

SimCMF models segment on clicks: ``points_topic`` (``geometry_msgs/msg/PointStamped``, x / y
in image pixels, as rqt_image_view publishes mouse clicks); the latest click is the prompt
until the next one arrives.
"""
from __future__ import annotations

import array
import threading

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from message_filters import ApproximateTimeSynchronizer, Subscriber
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from runtime import Segmenter
from runtime.ros.messages import frame_pair, image_fields, mask_images, simcmf_image
from runtime.ros.worker import SegmentWorker

PARAMETERS = {
    "model": "",  # .onnx / .engine / .plan / .pt
    "device": "",  # "", "cuda" or "cpu"
    "rgb_topic": "/camera/color/image_raw",
    "aux_topic": "/thermal/image_raw",
    "slop": 0.02,  # s: largest stamp gap of a synchronised pair
    "queue_size": 2,  # pairs waiting for the model
    "drop_stale": True,  # a full queue drops its oldest pair (counted) instead of waiting
    "topic_prefix": "gopt",
    "points_topic": "",  # SimCMF clicks
}


def image_type(topic: str):
    return CompressedImage if topic.rstrip("/").endswith(("/compressed", "/compressedDepth")) else Image


class SegmenterNode(Node):
    def __init__(self):
        super().__init__("segmenter")
        p = {name: self.declare_parameter(name, default).value for name, default in PARAMETERS.items()}
        if not p["model"]:
            raise ValueError("the 'model' parameter is required: the path of an exported model")
        self.seg = Segmenter(p["model"], device=p["device"] or None)
        self.get_logger().info(repr(self.seg))
        self.modality = self.seg.config.get("modality") or "thermal"
        self.num_classes = self.seg.config.get("num_classes", 2)
        self._click, self._click_lock, self._failed = None, threading.Lock(), 0
        if self.seg.kind == "simcmf":
            if not p["points_topic"]:
                raise ValueError("a SimCMF model segments on clicks: set the 'points_topic' parameter")
            self.create_subscription(PointStamped, p["points_topic"], self.on_click, 10)

        prefix = "/" + p["topic_prefix"].strip("/")
        self.pub_raw = self.create_publisher(Image, f"{prefix}/raw_segmentation_mask", 10)
        self.pub_colored = self.create_publisher(Image, f"{prefix}/colored_segmentation_mask", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        subs = [Subscriber(self, image_type(t), t, qos_profile=qos_profile_sensor_data)
                for t in (p["rgb_topic"], p["aux_topic"])]
        self.sync = ApproximateTimeSynchronizer(subs, queue_size=10, slop=float(p["slop"]))
        self.sync.registerCallback(self.on_pair)
        self.worker = SegmentWorker(self.segment, self.publish_masks, int(p["queue_size"]), bool(p["drop_stale"]),
                                    on_error=self.on_error)
        self.create_timer(1.0, self.publish_diagnostics)

    # executor thread: return at once
    def on_pair(self, rgb_msg, aux_msg) -> None:
        self.worker.offer((rgb_msg, aux_msg))

    def on_click(self, msg: PointStamped) -> None:
        with self._click_lock:
            self._click = (float(msg.point.x), float(msg.point.y))

    # worker thread
    def segment(self, pair):
        rgb_msg, aux_msg = pair
        if self.seg.kind == "gopt":
            bgr, aux = frame_pair(rgb_msg, aux_msg, self.modality, self.seg.resize_aux)
            return bgr, self.seg.run(bgr, aux)
        with self._click_lock:
            click = self._click
        if click is None:
            raise ValueError("no click yet on the points topic")
        bgr, aux = frame_pair(rgb_msg, aux_msg, None)
        mask, _ = self.seg.run(simcmf_image(self.seg.config, bgr, aux), points=[click])
        return bgr, mask

    def publish_masks(self, pair, result) -> None:
        header = pair[0].header
        bgr, labels = result
        raw, colored = mask_images(bgr, labels, self.num_classes)
        for pub, img, encoding in ((self.pub_raw, raw, "mono8"), (self.pub_colored, colored, "bgr8")):
            fields = image_fields(img, encoding)
            fields["data"] = array.array("B", fields["data"].tobytes())
            pub.publish(Image(header=header, **fields))

    def on_error(self, pair, error) -> None:
        stamp = pair[0].header.stamp
        self.get_logger().warning(f"pair at {stamp.sec}.{stamp.nanosec:09d} skipped: {error}",
                                  throttle_duration_sec=1.0)

    def publish_diagnostics(self) -> None:
        s = self.worker.stats()
        failing, self._failed = s["failed"] > self._failed, s["failed"]
        status = DiagnosticStatus(level=DiagnosticStatus.WARN if failing else DiagnosticStatus.OK,
                                  name="segmenter: " + self.seg.path.name, hardware_id=str(self.seg.device),
                                  message=f"{s['fps']:.1f} fps")
        status.values = [KeyValue(key=k, value=f"{v:.2f}" if isinstance(v, float) else str(v)) for k, v in s.items()]
        self.pub_diag.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))

    def destroy_node(self):
        self.worker.close()
        self.seg.close()
        return super().destroy_node()


def main(args=None) -> None:
    rclpy.init(args=args)
    node = SegmenterNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    main()
