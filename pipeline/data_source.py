"""The job's data: which dataset, where it lives, and which subsample or validation split is used."""

from dataclasses import dataclass
from typing import ClassVar

from data import DATASETS, load_splits, stratified_split, stratified_subsample
from features.parameters import FRACTION, POSITIVE_INT, StrOptions


@dataclass(frozen=True)
class DataSource:
    """Settings of the config's ``data`` section (see :func:`data.load_splits`).

    Attributes
    ----------
    name : one of :data:`data.DATASETS`
    root : folder holding the dataset (``--data-root``), or None
    train_root, test_root : ``image_folder``: the ImageFolder trees, relative to ``root`` when relative
    download : let torchvision download MNIST / FashionMNIST / CIFAR10 into ``root``
    test_fraction : ``digits``: held-out share of its stratified split
    n_train, n_test : a seeded stratified subsample of the training / test set (None: all)
    validation_fraction : evaluate on this stratified share of the training set instead of the test set
        (None: the test set); tune on it, and report the test set once at the end
    """

    name: str = "digits"
    root: str | None = None
    train_root: str | None = None
    test_root: str | None = None
    download: bool = False
    test_fraction: float = 0.25
    n_train: int | None = None
    n_test: int | None = None
    validation_fraction: float | None = None

    _parameter_constraints: ClassVar[dict] = {
        "name": [StrOptions(set(DATASETS))], "root": [str, None], "train_root": [str, None],
        "test_root": [str, None], "download": ["boolean"], "test_fraction": [FRACTION],
        "n_train": [POSITIVE_INT, None], "n_test": [POSITIVE_INT, None], "validation_fraction": [FRACTION, None],
    }

    def problems(self):
        """What is missing for these settings to name a dataset (a list of messages; empty when fine)."""
        if self.name == "image_folder" and not (self.train_root and self.test_root):
            return ["data.name is image_folder: set data.train_root and data.test_root"]
        return []

    @property
    def evaluated_on(self):
        """"validation" with a ``validation_fraction``, else "test"."""
        return "test" if self.validation_fraction is None else "validation"

    def load(self, seed):
        """(train, evaluation) :class:`data.ImageDataset` splits, subsampled as the settings ask.

        With ``validation_fraction`` the second split is a seeded stratified part of the training set
        (the test set is not touched).
        """
        train_set, test_set = load_splits(self.name, self.root, download=self.download, train_root=self.train_root,
                                          test_root=self.test_root, test_fraction=self.test_fraction, seed=seed)
        if self.n_train is not None:
            train_set = stratified_subsample(train_set, self.n_train, seed)
        if self.n_test is not None:
            test_set = stratified_subsample(test_set, self.n_test, seed + 1)
        if self.validation_fraction is not None:
            return stratified_split(train_set, self.validation_fraction, seed + 2)
        return train_set, test_set
