"""Barcode (in-store) payments: the ``alipay.intl.acquiring.*`` client and its durable best-practice flow.

Why a package of its own: the client and the flow sit beside the reconciliation pipeline (DESIGN.md layout);
journaled payments feed the ledger later (issue 5 item 3).
"""

from __future__ import annotations

from .client import PayClient, PayConfigError, PayError, PayResponseError, PayResult

__all__ = ["PayClient", "PayConfigError", "PayError", "PayResponseError", "PayResult"]
