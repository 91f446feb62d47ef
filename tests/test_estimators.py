"""The estimators follow scikit-learn's parameter protocol: clone, get_params/set_params, repr; and keep their state."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.base import clone

from interest.core.errors import InterestError
from interest.learn.base import Estimator
from interest.learn.boosting import StackedBooster, image_score
from interest.learn.decomposition import PCA
from interest.learn.groups import TrendGroupClassifier, assign_trend_groups
from interest.learn.linear import Ridge, ZeroTruncatedPoisson
from interest.learn.prototypes import Prototypes
from interest.models.study import DirectionHeads
from interest.stages.train import TrainConfig
from interest.learn.heads import UserHeads

ESTIMATORS = (PCA, Ridge, ZeroTruncatedPoisson, Prototypes, StackedBooster, TrendGroupClassifier, UserHeads,
              DirectionHeads)
# one parameter per estimator set away from its default
CHANGED = {PCA: {"n_components": 5}, Ridge: {"folds": 3, "relative_alphas": (0.1, 1.0)},
           ZeroTruncatedPoisson: {"max_iter": 40}, Prototypes: {"seed": 3},
           StackedBooster: {"num_boost_round": 5, "num_threads": 1}, TrendGroupClassifier: {"far_width": 0.25},
           UserHeads: {"method": "joint", "sharing": (0.0, 1.0)}, DirectionHeads: {"kappa": 2.5}}


def _fitted_attributes(est: Estimator) -> list[str]:
    return sorted(k for k in vars(est) if k.endswith("_") and not k.startswith("_"))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12)).astype(np.float32)
    y = X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.3, size=300)
    clusters = (X[:, 0] > 0).astype(np.int64) + 2 * (X[:, 1] > 0)
    counts = rng.poisson(np.exp(0.5 * X[:, 0])) + 1
    return X, y, clusters, counts


@pytest.fixture(scope="module")
def fitted(data):
    """Each estimator a bundle keeps, fitted on a small problem with its CHANGED parameters."""
    X, y, clusters, counts = data
    pca = PCA(**CHANGED[PCA]).fit(X)
    Z = pca.transform(X)
    ridge = Ridge(**CHANGED[Ridge]).fit(X, y)
    ztp = ZeroTruncatedPoisson(**CHANGED[ZeroTruncatedPoisson]).fit(X, counts)
    prototypes = Prototypes(**CHANGED[Prototypes]).fit(Z, clusters, y)
    stack = np.column_stack([ridge.oof_prediction_, prototypes.oof_prediction_])
    booster = StackedBooster(**CHANGED[StackedBooster]).fit(Z, stack, y)
    cuts = (float(np.quantile(y, 1 / 3)), float(np.quantile(y, 2 / 3)))
    groups = assign_trend_groups(y, cuts)
    classifier = TrendGroupClassifier(**CHANGED[TrendGroupClassifier]).fit(
        ridge.oof_prediction_, groups, cuts, np.abs(y), groups)
    direction = DirectionHeads(**CHANGED[DirectionHeads]).fit(X.mean(axis=0), np.eye(12, dtype=np.float32), 0.5)
    w, b = direction.fit_one(X[:20])
    direction = direction.with_head("alice", w, b, 20)
    return {PCA: pca, Ridge: ridge, ZeroTruncatedPoisson: ztp, Prototypes: prototypes, StackedBooster: booster,
            TrendGroupClassifier: classifier, DirectionHeads: direction}


@pytest.mark.parametrize("cls", ESTIMATORS, ids=lambda c: c.__name__)
def test_sklearn_clone_copies_the_parameters_and_no_fitted_state(cls):
    est = cls().set_params(**CHANGED[cls])
    copy = clone(est)
    assert type(copy) is cls and copy is not est
    assert copy.get_params() == est.get_params() and copy.get_params() != cls().get_params()
    assert _fitted_attributes(copy) == []


@pytest.mark.parametrize("cls", sorted(CHANGED.keys() - {UserHeads}, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_cloning_a_fitted_estimator_gives_an_unfitted_one(cls, fitted):
    est = fitted[cls]
    assert _fitted_attributes(est)
    copy = clone(est)
    assert _fitted_attributes(copy) == [] and copy.get_params() == est.get_params()


def test_get_params_names_the_constructor_parameters_and_returns_them_as_given():
    assert list(Prototypes().get_params()) == ["folds", "seed"]
    grid = (0.5, 2.0)
    ridge = Ridge(relative_alphas=grid)
    assert ridge.get_params()["relative_alphas"] is grid and ridge.get_params(deep=False) == ridge.get_params()
    for cls in ESTIMATORS:  # every parameter is kept under its own name
        assert list(cls().get_params()) == cls.param_names(), cls.__name__


def test_set_params_round_trips_and_refuses_an_unknown_name():
    heads = UserHeads()
    assert heads.set_params(**CHANGED[UserHeads]) is heads
    assert UserHeads().set_params(**heads.get_params()).get_params() == heads.get_params()
    assert heads.method == "joint" and heads.sharing == (0.0, 1.0)
    with pytest.raises(ValueError, match="'num_leafs' is not a parameter of StackedBooster"):
        StackedBooster().set_params(num_leafs=3)


def test_repr_shows_the_parameters_that_differ_from_the_defaults():
    assert repr(Ridge()) == "Ridge()" and repr(UserHeads()) == "UserHeads()"
    assert repr(Ridge(folds=3, alpha=2.0)) == "Ridge(alpha=2.0, folds=3)"
    assert repr(UserHeads(sharing=[0.0, 0.3, 1.0])) == "UserHeads()"  # a list as model.json keeps a tuple
    assert repr(DirectionHeads(kappa=2.5)) == "DirectionHeads(kappa=2.5)"
    namespace = {cls.__name__: cls for cls in ESTIMATORS}
    for cls in ESTIMATORS:
        est = cls(**CHANGED[cls])
        assert eval(repr(est), namespace).get_params() == est.get_params(), repr(est)


def test_to_state_and_from_state_give_back_the_fitted_estimator(fitted, data):
    X, y, clusters, counts = data
    for cls, est in fitted.items():
        params, arrays = est.to_state()
        lightgbm = est.lightgbm_state()
        # model.json keeps JSON values: tuples as lists
        assert params == {k: list(v) if isinstance(v, tuple) else v for k, v in est.get_params().items()}
        back = cls.from_state(params, arrays, lightgbm)
        assert back.get_params() == {k: list(v) if isinstance(v, tuple) else v for k, v in est.get_params().items()}
        for name, value in back.to_state()[1].items():
            np.testing.assert_array_equal(value, arrays[name], err_msg=f"{cls.__name__}.{name}")
    pca, ridge, booster = fitted[PCA], fitted[Ridge], fitted[StackedBooster]
    Z = pca.transform(X)
    np.testing.assert_array_equal(PCA.from_state(*pca.to_state()).transform(X), Z)
    np.testing.assert_array_equal(Ridge.from_state(*ridge.to_state()).predict(X), ridge.predict(X))
    stack = np.column_stack([ridge.oof_prediction_, fitted[Prototypes].oof_prediction_])
    again = StackedBooster.from_state(*booster.to_state(), booster.lightgbm_state())
    np.testing.assert_array_equal(again.predict(Z, stack), booster.predict(Z, stack))


def test_share_of_shifts_the_image_level_model_to_log_shares(data):
    X, _, _, counts = data
    counts_model = ZeroTruncatedPoisson(max_iter=40).fit(X, counts)
    intercept, oof = counts_model.intercept_, counts_model.oof_prediction_.copy()
    shares = ZeroTruncatedPoisson(max_iter=40).fit(X, counts).share_of(50)
    assert shares.intercept_ == intercept - float(np.log(50))
    np.testing.assert_array_equal(shares.oof_prediction_, oof - np.float32(np.log(50)))
    np.testing.assert_allclose(np.exp(shares.predict(X[:5])) * 50, np.exp(counts_model.predict(X[:5])), rtol=1e-5)


def test_use_image_score_makes_the_app_score_the_image_level_one(fitted, data):
    X, y, _, _ = data
    pca, ridge, prototypes = fitted[PCA], fitted[Ridge], fitted[Prototypes]
    Z = pca.transform(X)
    stack = np.column_stack([ridge.oof_prediction_, prototypes.oof_prediction_])
    booster = StackedBooster(num_boost_round=5, num_threads=1, validation_fraction=0.2).fit(Z, stack, y)
    assert booster.app_linear_ is None and booster.app_form()[0] == "lightgbm"
    assert booster.use_image_score(stack, y) is booster
    offset, scale = booster.app_linear_
    assert scale > 0 and booster.validation_["app_image"]["spearman"] > 0.5
    np.testing.assert_array_equal(booster.predict(Z, stack), image_score(stack, offset, scale))
    # a label the image-level score runs against keeps the booster
    assert StackedBooster(num_boost_round=5, num_threads=1).fit(Z, stack, y).use_image_score(stack, -y).app_linear_ is None


def test_train_config_hands_its_keys_to_the_estimators():
    config = TrainConfig(seed=4, num_threads=1, lgb_num_leaves=7, head_anchors=12, head_sharing=[0, 1],
                         groups_far_width=0.3)
    booster = StackedBooster(**config.estimator_params(StackedBooster))
    assert (booster.num_leaves, booster.seed, booster.num_threads) == (7, 4, 1)
    assert booster.get_params().keys() == StackedBooster().get_params().keys()  # every parameter from the config
    heads = UserHeads(**config.estimator_params(UserHeads))
    assert (heads.n_anchors, heads.sharing, heads.seed, heads.method) == (12, (0.0, 1.0), 4, "auto")
    assert TrendGroupClassifier(**config.estimator_params(TrendGroupClassifier)).far_width == 0.3

    @dataclass
    class Misnamed(TrainConfig):
        lgb_num_leafs: int = 3

    with pytest.raises(InterestError, match=r"^train config: 'lgb_num_leafs' names no parameter of StackedBooster"):
        Misnamed()


def test_the_estimators_do_not_import_scikit_learn():
    code = ("import sys, interest.learn.base, interest.learn.boosting, interest.learn.decomposition, "
            "interest.learn.groups, interest.learn.linear, interest.learn.prototypes, interest.learn.heads\n"
            "from interest.learn.linear import Ridge\n"
            "repr(Ridge(folds=3).set_params(seed=1))\n"
            "assert 'sklearn' not in sys.modules, 'scikit-learn imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
