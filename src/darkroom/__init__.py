"""Darkroom: a self-hosted AI image service."""

__version__ = "0.1.0"
