"""Simulation: Amaranth-simulator helpers, cocotb testbenches and their Verilator runner."""
