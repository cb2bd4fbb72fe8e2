"""`allotment demo`: a tenant from the vendor stories, with history and live traffic.

Everything goes through the public API (in process, over the same app `allotment serve`
runs), so the demo data is exactly what a vendor could have sent: meters, features and plans
without code, customers on them, a month and more of late-arriving usage, then checks, events,
seat heartbeats and charging sessions as they would arrive live. A server on the same database
shows it all as it happens.

`catalogue` defines the stories' meters, features and plans; `history` the customers and what
they used; `traffic` the live loop.
"""

from allotment.demo.run import run_demo

__all__ = ["run_demo"]
