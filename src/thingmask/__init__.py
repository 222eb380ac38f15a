"""thingmask: keep only the animals you choose in a video, cut out onto a blank canvas."""

from thingmask.config import Config, load_config
from thingmask.detections import Detections, keep
from thingmask.errors import ConfigError

__all__ = ["Config", "ConfigError", "Detections", "keep", "load_config"]
__version__ = "0.1.0"
