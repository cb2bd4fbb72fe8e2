"""`allotment import`: events from JSON Lines or CSV files, committed in batches.

Every line goes through the API's decoder (`metering.wire.decode`) and every batch through the
API's ingest (`entitlements.metered_usage.ingest`) in one transaction, so validation, de-duplication on
`(source, id)`, rollups and the record of rejected events are exactly the API's.

Resuming: after each committed batch, a checkpoint beside the file (`FILE.allotment-import`)
records the byte offset and line reached. It is written only after the commit, so it never
claims more than the database holds; a process killed between the commit and the checkpoint
re-sends that one batch next time, and de-duplication makes it count nothing.

`run` is the entry point; `files` and `csvfile` read records, `decoding` turns them into what
`ingest` takes, `checkpoint` keeps progress between runs.
"""

from allotment.importer.run import run_import

__all__ = ["run_import"]
