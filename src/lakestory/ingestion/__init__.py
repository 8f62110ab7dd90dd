"""Sources: landing files read by format (structured text, binary media) into bronze's rows,
and the ingestion log. The stage that runs them is `lakestory.operations.ingest`."""

from lakestory.ingestion.structured import read_structured

__all__ = ["read_structured"]
