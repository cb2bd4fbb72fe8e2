"""Imports every domain's models so that the shared metadata knows every table."""

from allotment.customers import models as customers  # noqa: F401
from allotment.entitlements import models as entitlements  # noqa: F401
from allotment.metering import models as metering  # noqa: F401
from allotment.notifications import models as notifications  # noqa: F401
from allotment.tenancy import models as tenancy  # noqa: F401
