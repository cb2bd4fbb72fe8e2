"""`allotment export`: the event log as CloudEvents JSON Lines or CSV, for billing, audits or
another Allotment (`allotment import` reads both formats back).

The log is read in pages in the order events were stored, each page its own short read, up to
the end of the log when the export starts: every event acknowledged before then is written
once (the log holds each identity once), and events arriving during the export wait for the
next one. Data is written as stored, so fractions keep every digit they were sent with.

`run` is the entry point; `formats` turns a stored event into a line.
"""

from allotment.exporter.run import EventSelection, run_export

__all__ = ["EventSelection", "run_export"]
