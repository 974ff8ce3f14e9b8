"""Amaranth 0.5 RTL of the BEBERT accelerator: every block a wiring.Component with stream ports."""
