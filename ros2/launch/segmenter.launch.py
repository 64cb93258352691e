"""ros2 launch mmseg_ros segmenter.launch.py model:=/path/gopt_rgbt.onnx [rgb_topic:=...] [aux_topic:=...]

Every node parameter is a launch argument with the node's default."""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

ARGUMENTS = {  # name: (default, type, description)
    "model": ("", str, "exported model: .onnx, .engine / .plan or .pt"),
    "device": ("", str, "'' (GPU when available), 'cuda' or 'cpu'"),
    "rgb_topic": ("/camera/color/image_raw", str, "colour Image or CompressedImage topic"),
    "aux_topic": ("/thermal/image_raw", str, "thermal / depth Image or CompressedImage topic"),
    "slop": ("0.02", float, "largest stamp gap of a synchronised pair, s"),
    "queue_size": ("2", int, "pairs waiting for the model"),
    "drop_stale": ("true", bool, "drop the oldest waiting pair when the model falls behind"),
    "topic_prefix": ("gopt", str, "masks go to /PREFIX/raw_segmentation_mask and /PREFIX/colored_segmentation_mask"),
    "points_topic": ("", str, "SimCMF: geometry_msgs/PointStamped clicks in image pixels"),
}


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=text)
            for name, (default, _, text) in ARGUMENTS.items()]
    params = {name: ParameterValue(LaunchConfiguration(name), value_type=kind)
              for name, (_, kind, _) in ARGUMENTS.items()}
    node = Node(package="mmseg_ros", executable="segmenter", name="segmenter", output="screen", parameters=[params])
    return LaunchDescription([*args, node])
