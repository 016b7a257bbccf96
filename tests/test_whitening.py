"""ZCA whitening (features/whitening.py)."""

import numpy as np
import pytest

from features.whitening import ZCAWhitener


def test_zca_whitening_gives_identity_covariance_on_the_fitted_patches():
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6))
    whitened = ZCAWhitener(eps=0.0).fit_transform(patches)
    np.testing.assert_allclose(np.cov(whitened, rowvar=False, bias=True), np.eye(6), atol=1e-10)


def test_zca_with_eps_damps_eigenvalues_and_colouring_inverts_it():
    rng = np.random.default_rng(1)
    patches = rng.normal(size=(500, 5)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1])
    whitener = ZCAWhitener(eps=0.1).fit(patches)
    eigenvalues = np.linalg.eigvalsh(np.cov(patches, rowvar=False, bias=True))
    whitened_eigenvalues = np.linalg.eigvalsh(np.cov(whitener.transform(patches), rowvar=False, bias=True))
    np.testing.assert_allclose(np.sort(whitened_eigenvalues), np.sort(eigenvalues / (eigenvalues + 0.1)),
                               rtol=1e-10)
    np.testing.assert_allclose(whitener.whitening_ @ whitener.colouring_, np.eye(5), atol=1e-10)
    np.testing.assert_allclose(whitener.whitening_, whitener.whitening_.T, atol=1e-12)


def test_zca_rejects_negative_eps():
    with pytest.raises(ValueError, match="eps"):
        ZCAWhitener(eps=-1.0).fit(np.ones((4, 2)))
