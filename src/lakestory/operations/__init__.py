"""The stage operations: each composes the toolkits below it (ingestion, quality, privacy)
into one run over the warehouse, and writes only through `lakestory.io`'s shell.

- `ingest`: landing files -> bronze, exactly once per file;
- `refine`: bronze -> silver + quarantine, and `reprocess` of quarantine;
- `erasure`: `forget` a person everywhere, and keep them out;
- `rotation`: `rotate-key`, every artificial id kept;
- `recovery`: `restore` a backup, erasures applied again.
"""
