"""The hardware-in-the-loop harness: one pytest plugin for real units and virtual boards.

Registered as the `qrfleet` pytest11 entry point; see tools/harness/plugin.py for its options
and fixtures, and tests/hil/ for the scenarios that use them.
"""
