"""The rows a read-out holds out to choose its penalty: stratified by class, and whole groups at a time.

A group is a set of rows that must not be split between fitting and scoring: an image and its horizontal
mirror (``data.horizontal_flips``) are one group, else the mirror's features would score the penalty on an
image the fit has seen.
"""

import numpy as np
from sklearn.model_selection import train_test_split


def held_out_split(labels, fraction, random_state, groups=None):
    """Sorted ``(fit rows, held-out rows)``, each an int array: a seeded ``fraction`` of every class held out.

    Parameters
    ----------
    labels : (n,) class labels (any comparable values) of the rows
    fraction : float in (0, 1), the share held out (of the groups, when ``groups`` is given)
    random_state : int or None
    groups : None or (n,) group ids; the rows of a group (one label each) land on the same side

    Raises ValueError (scikit-learn's message) when some class has too few rows (groups) to split.
    """
    labels = np.asarray(labels)
    if groups is None:
        fit_rows, held_out = train_test_split(np.arange(len(labels)), test_size=fraction, stratify=labels,
                                              random_state=random_state)
        return np.sort(fit_rows), np.sort(held_out)
    names, first_row, group_of_row = np.unique(check_groups(groups, labels), return_index=True, return_inverse=True)
    _, held_out_groups = train_test_split(np.arange(len(names)), test_size=fraction, stratify=labels[first_row],
                                          random_state=random_state)
    held = np.isin(group_of_row, held_out_groups)
    return np.flatnonzero(~held), np.flatnonzero(held)


def check_groups(groups, labels):
    """``groups`` as an (n,) array, checked against the rows' ``labels`` (n,): ValueError unless every
    group has one label."""
    groups = np.asarray(groups)
    if groups.shape != labels.shape:
        raise ValueError(f"groups must have one entry per row, shape {labels.shape}, got {groups.shape}")
    _, group_of_row = np.unique(groups, return_inverse=True)
    _, label_of_row = np.unique(labels, return_inverse=True)
    pairs = np.unique(np.stack([group_of_row, label_of_row]), axis=1)
    if pairs.shape[1] != group_of_row.max(initial=-1) + 1:
        raise ValueError("every group must hold rows of one class (an image and its mirror), but some group "
                         "mixes labels: give each image its own group id")
    return groups
