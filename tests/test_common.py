"""scikit-learn API conformance of every public estimator, with no expected failures."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from mlmlearn import EMLM, MLM, HuberMLM, RandomReferences, RSMaximin

ESTIMATORS = [
    EMLM(),
    EMLM(references=0.5),
    MLM(),
    MLM(references=0.5, multilateration="nonlinear"),
    HuberMLM(references=0.5),
    RSMaximin(n_references=5),
    RandomReferences(n_references=5),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    check(estimator)
