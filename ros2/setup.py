"""ament_python package of the ``segmenter`` node. The ``runtime`` package it runs comes from
mmseg-deploy, installed into the same Python (pip install -e "..[ros]" from this folder)."""
from glob import glob

from setuptools import setup

package = "mmseg_ros"

setup(
    name=package,
    version="0.1.0",
    packages=[package],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package}"]),
        (f"share/{package}", ["package.xml"]),
        (f"share/{package}/launch", glob("launch/*.launch.py")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="ROS 2 segmenter node for mmseg-deploy",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"segmenter = {package}.segmenter_node:main"]},
)
