"""The read-out: the l1 / group-l1 output layer (SPGL1: penalties, operators, solves, working sets) and ridge."""

from .output_layer import L1OutputLayer
from .ridge import ridge_readout
from .solve import SolveResult, solve_l1

__all__ = ["L1OutputLayer", "SolveResult", "ridge_readout", "solve_l1"]
