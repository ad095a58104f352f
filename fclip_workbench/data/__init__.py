"""Data: catalogs (`catalog`), the public data sets (`datasets`, `fetch`), splits and prompts."""
