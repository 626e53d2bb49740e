"""Disk image and software deployment orchestrator for school districts."""

__version__ = "0.1.0"
