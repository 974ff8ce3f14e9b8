"""Bit-accurate integer NumPy model: the arithmetic contract (docs/arithmetic.md) that hw/ matches bit for bit."""
