"""Events, meters, rollups: from a stream of CloudEvents to numbers per subject and window."""
