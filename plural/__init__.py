"""plural: pluralistic and personalized reward modelling in JAX.

Data flows in one straight line:
table -> `plural.data` -> a family in `plural.models` -> `plural.train` -> `plural.evaluate`
-> `analysis` -> `paper_figs`.
"""

from plural.errors import PluralError

__all__ = ["PluralError"]
__version__ = "0.1.0"
