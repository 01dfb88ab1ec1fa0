"""Rendering: a Lab (and its provider's own files) -> the text files of a lab directory."""
