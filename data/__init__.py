"""Dataset layer: load image classification datasets as uint8 (N, H, W, C) arrays."""

from .core import DatasetError, ImageDataset, stratified_split, stratified_subsample
from .datasets import DATASETS, load_splits

__all__ = ["DATASETS", "DatasetError", "ImageDataset", "load_splits", "stratified_split", "stratified_subsample"]
