"""contrastlab: contrastive and self-supervised representation learning.

Turns unlabeled images into a trained encoder and measures how good it is.
"""

__version__ = "0.1.0"

from contrastlab.errors import ConfigError, ContrastlabError, DataError

__all__ = ["ConfigError", "ContrastlabError", "DataError", "__version__"]
