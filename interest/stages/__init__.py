"""Layer 5: the research stages, in their order: collect, embed, characterize, labels, train, evaluate,
analyze. Each reads and writes the collection contract (interest.core.collection)."""
