"""The estimator kit: scikit-learn-style estimators, one module per family, that know nothing of collections or bundles.

``base`` (the :class:`~interest.learn.base.Estimator` protocol), ``decomposition``
(PCA), ``linear`` (ridge, zero-truncated Poisson), ``prototypes``, ``boosting``
(the stacked LightGBM) and ``groups`` (trend-group cut points and classifier).
Imports only the core modules below it.
"""
