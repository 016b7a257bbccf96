"""The accuracy-against-filters curves of a report (the job's report pages are tested in test_job.py)."""

from types import SimpleNamespace

from PIL import Image

from pipeline.reporting.report import accuracy_curves, save_accuracy_plot


def run(filters, accuracy, method=None, ridge=None, model="convex_rf", dataset="cifar10"):
    metrics = {"n_filters": filters, **({"filter_method": method} if method else {}),
               **({"ridge_readout": {"accuracy": ridge}} if ridge is not None else {})}
    return SimpleNamespace(model=model, dataset=dataset, accuracy=accuracy, metrics=metrics)


def test_one_curve_per_dataset_and_filter_bank_sorted_by_filters_with_the_ridge_read_out_beside_it():
    runs = [run(4000, 0.72, "kmeans", ridge=0.74), run(1600, 0.70, "kmeans", ridge=0.71),
            run(1600, 0.69, ridge=0.70), run(4000, 0.70, "extreme_point", ridge=None),
            run(500, 0.97, dataset="mnist"), run(0, 0.4, model="backprop")]
    assert accuracy_curves(runs) == {
        "cifar10, kmeans": [(1600, 0.70), (4000, 0.72)],
        "cifar10, kmeans, ridge read-out": [(1600, 0.71), (4000, 0.74)],
        "cifar10, extreme_point": [(1600, 0.69), (4000, 0.70)],  # no ridge curve: one run has none
        "mnist, extreme_point": [(500, 0.97)],
    }


def test_the_plot_is_written(tmp_path):
    curves = {"cifar10, kmeans": [(1600, 0.70), (4000, 0.72)], "cifar10, kmeans, ridge read-out": [(1600, 0.71)]}
    assert save_accuracy_plot(curves, tmp_path / "curves.png") == "curves.png"
    assert Image.open(tmp_path / "curves.png").size[0] > 300
