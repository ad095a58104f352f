"""Labelling: label fields and taxonomies, zero-shot suggestions, the label store (`store`), the annotator and its app."""
