"""The one source of the pieces several model families share: towers, losses, the fusion transformer's layers, the
speech recogniser, the retrieval interface and the processor.

A family folder must stay self-contained (its saved copy is what `trust_remote_code` loads), so each family holds
sibling copies of the files it uses, whose first line reads `# Copied from modeling.common.<file>`. Edit the file
here, then run `make fix-copies`; `make lint` (and the test suite) fail while a copy differs from its source.
"""
