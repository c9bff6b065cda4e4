"""TraqPoint networks, keypoint selection, descriptor sampling, matchers and baselines."""

from .base import Extractor
from .conventions import Features
from .errors import BadInputError, MissingFileError, TraqPointError
from .factory import METHODS, build

__all__ = ["build", "METHODS", "Extractor", "Features", "TraqPointError", "BadInputError", "MissingFileError"]
