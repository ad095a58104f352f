"""Search: exact and approximate indexes (`index`), saved indexes (`saved`), text/image search (`searcher`)."""
