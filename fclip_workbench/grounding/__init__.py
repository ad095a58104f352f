"""Grounding: where in the image a phrase sits (`maps`) and how well it is pointed at (`metrics`)."""
