"""Synthesis flows (YoWASP yosys + nextpnr) and board tops."""
