"""stamp_ros: STAMP language-driven segmentation as a ROS 2 perception node.

The generated interfaces (``stamp_ros.msg``, ``.srv``, ``.action``) are installed by the
CMake build into the environment's site-packages, while a development checkout keeps the
Python sources in the repository. ``extend_path`` lets both halves form one package, so
tests can run against the working tree without reinstalling after every edit.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
