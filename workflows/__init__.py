"""Deterministic workflow classes and the dataclasses they exchange."""
