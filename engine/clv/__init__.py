"""Predicted value: BG/NBD (purchase frequency and dropout) and Gamma-Gamma (spend per
purchase) models, fitted by maximum likelihood on per-customer summaries, and the
predictions they give (P(alive), expected purchases, expected spend, CLV).

    transactions -> summary.py (frequency, recency, T, monetary value per customer)
                 -> bgnbd.py, gammagamma.py (fit: mle.py) -> artefact.py (models/clv.yaml)
                 -> predictions: bgnbd.py, gammagamma.py, value.py (CLV); holdout.py checks them

``summary``, ``bgnbd``, ``gammagamma``, ``value``, ``holdout`` and ``mle`` need numpy and
scipy (the optional extra ``segengine[clv]``); only ``segengine fit clv`` and the tests import
them. ``closed`` (the predictions in pure Python, for a per-customer evaluation) and
``artefact`` (the fitted model file) need neither. Importing this package imports nothing
of its own (it puts the compiled modules first on its search path when they are in use).
"""

from .. import NATIVE
from ..native import extend

extend(__path__, __name__, NATIVE)  # the compiled modules, when in use (segengine.native)
