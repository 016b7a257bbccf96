"""Reporting: classification metrics, filter pictures and the HTML / Markdown run report."""

from .metrics import classification_metrics
from .report import write_report
from .visualize import save_filter_pictures

__all__ = ["classification_metrics", "save_filter_pictures", "write_report"]
