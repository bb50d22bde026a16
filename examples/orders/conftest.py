"""The example's tests keep their database in a folder of their own."""

import os
import tempfile

os.environ.setdefault(
    "ORDERS_DATABASE_URL", f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='orders-')}/orders.db"
)
