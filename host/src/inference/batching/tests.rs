//! Unit tests of the batcher over a small in-process graph.
