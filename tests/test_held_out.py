"""The held-out rows of the read-outs' penalty choice: stratified, and groups (image and mirror) kept whole."""

import numpy as np
import pytest

from pipeline.readout.held_out import held_out_split


def labels_of(n_per_class=(30, 20, 10)):
    return np.repeat(np.arange(len(n_per_class)), n_per_class)


def test_without_groups_it_is_a_sorted_seeded_stratified_split():
    labels = labels_of()
    fit_rows, held_out = held_out_split(labels, 0.2, random_state=3)
    assert np.all(np.diff(fit_rows) > 0) and np.all(np.diff(held_out) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([fit_rows, held_out])), np.arange(len(labels)))
    np.testing.assert_array_equal(np.bincount(labels[held_out]), [6, 4, 2])
    again = held_out_split(labels, 0.2, random_state=3)
    np.testing.assert_array_equal(again[1], held_out)


def test_an_image_and_its_mirror_land_on_the_same_side():
    labels = labels_of()
    n = len(labels)
    doubled, groups = np.concatenate([labels, labels]), np.tile(np.arange(n), 2)
    fit_rows, held_out = held_out_split(doubled, 0.2, random_state=0, groups=groups)
    assert not set(groups[fit_rows]) & set(groups[held_out])
    assert len(held_out) == 2 * 12  # a fifth of the 60 groups, both rows of each
    np.testing.assert_array_equal(np.bincount(doubled[held_out]), [12, 8, 4])
    # one row per group: the groups' split is the ungrouped split of the groups
    np.testing.assert_array_equal(held_out_split(labels, 0.2, 0, groups=np.arange(n))[1],
                                  held_out_split(labels, 0.2, 0)[1])


@pytest.mark.parametrize("groups, message", [
    (np.array([0, 0, 1, 1, 2, 2]), "mixes labels"),
    (np.array([0, 1, 2]), "one entry per row"),
])
def test_groups_that_do_not_match_the_rows_are_refused(groups, message):
    with pytest.raises(ValueError, match=message):
        held_out_split(np.array([0, 1, 0, 1, 0, 1]), 0.5, 0, groups=groups)
