"""BEBERT: efficient, robust binary ensemble BERT, from PyTorch training to an FPGA accelerator.

Subpackages: :mod:`bebert.model` (PyTorch), :mod:`bebert.golden` (bit-accurate
NumPy), :mod:`bebert.hw` (Amaranth RTL), :mod:`bebert.sim` (simulation),
:mod:`bebert.fpga` (synthesis).
"""

__version__ = "0.1.0"
