"""Accuracy reports of finished runs (``python run.py report --run OUT [--run OUT2 ...]``).

Writes ``report.html`` and ``report.md`` (same content) into the first run folder, with the pictures
next to them: a side-by-side table of all runs (the paper's Table 1 style, with the paper's Convex-RF
figures for MNIST and CIFAR-10), accuracy against the number of filters (a curve per filter bank, the
ridge read-out's dashed beside it), and per run the test/train
accuracy, per-class accuracy with the output layer's sparsity (non-zero features per class), the
confusion matrix, the penalty path of ``output.beta: auto`` (held-out accuracy and features kept against
the penalty, as a plot and a table), the stage timings and memory, the config, and the filter pictures of
``run.py visualize`` where they exist.
"""

import html
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from ..model_files import load_run  # noqa: E402
from ..storage.atomic import write_text_atomic  # noqa: E402
from .visualize import save_figure  # noqa: E402

# Test accuracy in Ergen and Pilanci (JMLR 2021), Table 1 (method.md section 3): model -> dataset -> accuracy.
PAPER = {
    "least_squares": {"mnist": 0.8604, "cifar10": 0.3639},
    "backprop": {"mnist": 0.9625, "cifar10": 0.4157},
    "cutting_plane": {"mnist": 0.9694, "cifar10": 0.4216},
    "convex_rf": {"mnist": 0.9772, "cifar10": 0.8028},
}
PAPER_NAMES = {"least_squares": "one-layer NN, least squares", "backprop": "two-layer NN, backpropagation",
               "cutting_plane": "two-layer NN, convex (cutting plane)",
               "convex_rf": "two-layer Convex-RF, 40000 filters"}

# The page reports images that fail to load, in a banner and in <body data-images="...">.
_IMAGE_CHECK = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
  document.body.dataset.images = broken.length ? "broken" : "ok";
  if (broken.length) {
    const note = document.createElement("p");
    note.className = "warning";
    note.textContent = "Pictures missing: " + broken.join(", ");
    document.body.prepend(note);
  }
});
</script>"""
_STYLE = ("body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse;"
          "margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}"
          "th:first-child,td:first-child{text-align:left}img{max-width:100%}.warning{color:#b00}")


class RunSummary:
    """What a report shows of one run folder: ``metrics.json`` and the saved model."""

    def __init__(self, folder):
        self.folder = Path(folder)
        model, self.metrics = load_run(self.folder)  # both of one run
        weights = model.output_layer_.coef_ if self.model == "convex_rf" else getattr(model, "output_weights_", None)
        self.used_per_class = None if weights is None else np.count_nonzero(weights, axis=0)

    @property
    def model(self):
        return self.metrics.get("model", "convex_rf")

    @property
    def size(self):
        """Filters (Convex-RF) or hidden neurons (two-layer networks), as text."""
        if self.model == "convex_rf":
            return f"{self.metrics['n_filters']} {self.metrics.get('filter_method', 'extreme_point')} filters"
        return f"{self.metrics['n_neurons']} neurons" if "n_neurons" in self.metrics else ""

    @property
    def sparsity(self):
        """Used / all features of the output layer (Convex-RF), as text."""
        if "n_features" not in self.metrics:
            return ""
        return f"{self.metrics['n_features_used']} / {self.metrics['n_features']}"

    @property
    def name(self):
        return self.folder.name

    @property
    def dataset(self):
        data = self.metrics["config"]["data"]
        return "cifar10" if "cifar10" in f"{data['name']} {data['train_root']}" else data["name"]

    @property
    def evaluated_on(self):
        return self.metrics.get("evaluated_on", "test")

    @property
    def accuracy(self):
        """Accuracy on the evaluation split (the test set, or a validation split)."""
        return self.metrics[f"{self.evaluated_on}_accuracy"]

    @property
    def seconds(self):
        return sum(self.metrics["stage_seconds"].values())


def write_report(runs, out=None):
    """Write ``report.html`` and ``report.md`` for the run folders ``runs`` into ``out`` (default: the first)."""
    summaries = [RunSummary(run) for run in runs]
    out = Path(out or summaries[0].folder)
    blocks = [("h1", "Convex-RF accuracy report"), ("h2", "Runs side by side"), ("table", _overview(summaries))]
    if sum(s.model == "convex_rf" for s in summaries) > 1:
        blocks += [("h2", "Accuracy against the number of filters"),
                   ("img", save_accuracy_plot(accuracy_curves(summaries), out / "accuracy_vs_filters.png"))]
    for index, run in enumerate(summaries):
        blocks += _run_blocks(run, out / f"confusion_{index}.png")
        if run.metrics.get("beta_path"):
            blocks += _path_blocks(run.metrics["beta_path"], out / f"path_{index}.png")
        pictures = [run.folder / name for name in ("filters.png", "filters_by_class.png")]
        if all(path.is_file() for path in pictures):  # from `run.py visualize`
            blocks += [("h3", "Filters")] + [("img", os.path.relpath(path, out)) for path in pictures]
    write_text_atomic(out / "report.md", _markdown(blocks))
    write_text_atomic(out / "report.html", _html(blocks))
    return out / "report.html", out / "report.md"


def _overview(summaries):
    header = ["run", "model", "data (training images)", "filters / neurons", "features used", "accuracy (split)",
              "train accuracy", "ridge read-out", "objective", "time (s)", "peak memory (MB)"]
    rows = [[s.name, s.model, f"{s.dataset} ({s.metrics['n_train']})" if "n_train" in s.metrics else s.dataset,
             s.size, s.sparsity,
             f"{s.accuracy:.4f} ({s.evaluated_on})", f"{s.metrics['train_accuracy']:.4f}",
             f"{s.metrics['ridge_readout']['accuracy']:.4f}" if "ridge_readout" in s.metrics else "",
             f"{s.metrics['objective']:.6g}" if "objective" in s.metrics else "",
             f"{s.seconds:.0f}", f"{s.metrics['peak_rss_mb']:.0f}"]
            for s in summaries]
    shown = {(s.model, s.dataset) for s in summaries}
    rows += [[f"paper (Ergen and Pilanci 2021): {PAPER_NAMES[model]}", model, dataset, "", "",
              f"{PAPER[model][dataset]:.4f} (test)", "", "", "", "", ""]
             for model in PAPER for dataset in ("mnist", "cifar10") if (model, dataset) in shown]
    return header, rows


def accuracy_curves(summaries):
    """``{label: [(filters, accuracy), ...]}`` sorted by filters: one curve per dataset and filter bank of the
    Convex-RF runs in ``summaries`` (:class:`RunSummary`-like: ``model``, ``dataset``, ``accuracy`` and
    ``metrics``), and beside it the ridge read-out's where every run of the curve has one."""
    curves = {}
    for s in summaries:
        if s.model != "convex_rf":
            continue
        label = f"{s.dataset}, {s.metrics.get('filter_method', 'extreme_point')}"
        ridge = s.metrics.get("ridge_readout", {}).get("accuracy")
        curves.setdefault(label, []).append((s.metrics["n_filters"], s.accuracy))
        curves.setdefault(f"{label}, ridge read-out", []).append((s.metrics["n_filters"], ridge))
    return {label: sorted(points) for label, points in curves.items()
            if all(accuracy is not None for _, accuracy in points)}


def save_accuracy_plot(curves, path, ylabel="accuracy (test or validation split)"):
    """Plot ``curves`` (``{label: [(filters, accuracy), ...]}``, ``"..., ridge read-out"`` labels dashed in
    their bank's colour) against a log filter axis into ``path``; returns its file name."""
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    colours = {}
    for label, points in curves.items():
        bank = label.removesuffix(", ridge read-out")
        line, = axis.plot(*zip(*points), marker="o", label=label, linestyle="--" if bank != label else "-",
                          color=colours.get(bank))
        colours.setdefault(bank, line.get_color())
    axis.set_xscale("log")
    axis.set_xlabel("filters")
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    save_figure(figure, path, dpi=120)
    plt.close(figure)
    return path.name


def _confusion_plot(run, path):
    confusion = np.asarray(run.metrics["confusion_matrix"])
    classes = run.metrics["classes"]
    figure, axis = plt.subplots(figsize=(1 + 0.5 * len(classes), 0.8 + 0.5 * len(classes)))
    axis.imshow(confusion, cmap="Blues")
    for (r, c), count in np.ndenumerate(confusion):
        axis.text(c, r, str(count), ha="center", va="center", fontsize=7,
                  color="white" if count > confusion.max() / 2 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=90)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    save_figure(figure, path, dpi=120)
    plt.close(figure)
    return path.name


def _path_plot(points, path):
    """Held-out accuracy and features kept against ``beta / beta_max`` (log, decreasing to the right)."""
    ratios = [point["beta_ratio"] for point in points]
    figure, accuracy_axis = plt.subplots(figsize=(6, 4))
    features_axis = accuracy_axis.twinx()
    accuracy_axis.plot(ratios, [point["score"] for point in points], marker="o", color="C0")
    features_axis.plot(ratios, [point["n_features"] for point in points], marker=".", color="C1")
    chosen = next(point for point in points if point["chosen"])
    accuracy_axis.axvline(chosen["beta_ratio"], color="0.6", linestyle="--", label="chosen penalty")
    accuracy_axis.set_xscale("log")
    accuracy_axis.invert_xaxis()
    accuracy_axis.set_xlabel("penalty beta / beta_max")
    accuracy_axis.set_ylabel("held-out accuracy", color="C0")
    features_axis.set_ylabel("features kept", color="C1")
    accuracy_axis.legend(loc="lower center")
    save_figure(figure, path, dpi=120)
    plt.close(figure)
    return path.name


def _path_blocks(points, plot_path):
    """The report's section on the validated penalty path (``metrics.json``'s ``beta_path``)."""
    table = (["point", "beta / beta_max", "features kept", "held-out accuracy", "seconds", "chosen"],
             [[str(i), f"{point['beta_ratio']:.4g}", str(point["n_features"]), f"{point['score']:.4f}",
               f"{point['seconds']:.1f}", "yes" if point["chosen"] else ""] for i, point in enumerate(points, 1)])
    return [("h3", "Output layer: the penalty chosen on held-out rows"), ("img", _path_plot(points, plot_path)),
            ("table", table)]


def _run_blocks(run, confusion_path):
    metrics = run.metrics
    used = run.used_per_class if run.used_per_class is not None else [""] * len(metrics["classes"])
    per_class = (["class", f"{run.evaluated_on} accuracy", "non-zero output weights"],
                 [[name, f"{accuracy:.4f}", str(count)] for (name, accuracy), count
                  in zip(metrics["per_class_accuracy"].items(), used)])
    stages = (["stage", "seconds"], [[stage, f"{seconds:.1f}"] for stage, seconds in metrics["stage_seconds"].items()])
    facts = [f"{run.model} on {metrics.get('n_train', 'all')} training images: {run.evaluated_on} accuracy "
             f"{run.accuracy:.4f}, train accuracy {metrics['train_accuracy']:.4f}", run.size,
             f"{run.sparsity} features used" if run.sparsity else "", f"peak memory {metrics['peak_rss_mb']:.0f} MB",
             f"folder {run.folder}"]
    blocks = [("h2", f"Run {run.name}"), ("p", "; ".join(fact for fact in facts if fact))]
    if run.model == "cutting_plane":
        blocks.append(("p", f"cutting plane: one network per class sharing {metrics['n_seed_neurons']} extreme-point "
                            f"seed neurons; rounds per class {metrics['rounds_per_class']}; duality gap "
                            f"{metrics['duality_gap']:.3g} (relative {metrics['relative_duality_gap']:.2e}, under "
                            f"the spike-free relaxation); beta {metrics['beta']:.4g}"))
    return blocks + [
        ("h3", "Per class"), ("table", per_class),
        ("h3", f"Confusion matrix ({run.evaluated_on} split)"), ("img", _confusion_plot(run, confusion_path)),
        ("h3", "Stages"), ("table", stages),
        ("h3", "Config"), ("pre", yaml.safe_dump(metrics["config"], sort_keys=False))]


def _markdown(blocks):
    lines = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + content, ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "img":
            lines += [f"![{content}]({content})", ""]
        elif kind == "pre":
            lines += ["```yaml", content.rstrip(), "```", ""]
        else:
            header, rows = content
            lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def _html(blocks):
    parts = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3", "p", "pre"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "img":
            parts.append(f'<img src="{html.escape(content)}" alt="{html.escape(content)}">')
        else:
            header, rows = content
            cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            parts.append(f"<table><tr>{cells}</tr>{body}</table>")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Convex-RF report</title>'
            f"<style>{_STYLE}</style>{_IMAGE_CHECK}</head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")
