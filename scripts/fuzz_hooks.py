"""Schemathesis hooks of scripts/fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

Two things schemathesis does not do on its own:

* Reach the routes' logic with an agent token (FUZZ_RUN=agent). A random `vendorId` rarely
  names the agent whose token the run holds, so almost every request would stop at
  authentication. Most bodies are pointed at that vendor, at a warehouse that exists and, for
  items, at mapped unit/VAT codes, so they get down to the database writes; the rest keep
  what was generated, so invalid vendor ids are still sent. `/api/agents/register` never names
  the run's vendor (schemathesis reuses values it saw in responses): rotating the run's token
  would lock the rest of the run out.
* Send the values Postgres refuses unless the service checks them first (NUL and other control
  characters, bidi and zero-width characters, dates outside Postgres' range, numbers that
  overflow their column once rounded) inside otherwise valid records: schemathesis draws them
  rarely, and mostly in records already invalid for another reason. Some bodies get one field
  of one record (or of the body) replaced by such a value of the same JSON type.
"""

import copy
import os
import random

import schemathesis

RUN = os.environ.get("FUZZ_RUN", "admin")
VENDOR = os.environ["FUZZ_VENDOR_ID"]
WAREHOUSE = os.environ["FUZZ_WAREHOUSE_ID"]
# Codes scripts/fuzz.sh maps for the vendor: an item whose codes are unmapped is never written.
UNIT, VAT = "PCE", "T1"
RNG = random.Random(int(os.environ.get("FUZZ_SEED", "0")))

HOSTILE_TEXT = [
    "\u0000",
    "a\u0000b",
    "line\u001b[31m",
    "\u007f",
    "\u0085",
    "sku\u202e",
    "\u200bsku",
    "\ufeff",
    " ",
    "x" * 101,
    "x" * 256,
    "é" * 100,
    "x" * 2001,
]
HOSTILE_TIME = [
    "-5000-01-01T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "-4713-11-24T00:00:00Z",
    "-4713-11-23T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]
HOSTILE_NUMBER = [
    99999999.99999,
    99999999.99995,
    99999999.99994,
    99999999999.9999,
    -99999999999.9995,
    1e30,
    1e-30,
    -0.0,
    2**64,
]


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict):
        return
    if RUN == "agent":
        point_at_the_runs_agent(case.operation.path, body)
    spoil(body)


def point_at_the_runs_agent(path, body):
    if path == "/api/agents/register":
        if body.get("vendorId") == VENDOR:
            body["vendorId"] = VENDOR + "-other"
        return
    if RNG.random() < 0.8:
        body["vendorId"] = VENDOR
    if "warehouseId" in body and RNG.random() < 0.8:
        body["warehouseId"] = WAREHOUSE
    items = body.get("items")
    if isinstance(items, list):
        for index, item in enumerate(items):
            if isinstance(item, dict) and RNG.random() < 0.8:
                items[index] = {**item, "unitCode": UNIT, "vatCode": VAT}


def spoil(body):
    """Replaces one field of one record of the body (or of the body itself)."""
    lists = [key for key, value in body.items() if isinstance(value, list) and value]
    if lists and RNG.random() < 0.7:
        key = RNG.choice(lists)
        # Generated lists often repeat one dict object: change a copy, not all of them.
        records = list(body[key])
        index = RNG.randrange(len(records))
        if isinstance(records[index], dict):
            records[index] = copy.deepcopy(records[index])
            spoil_field(records[index])
            body[key] = records
    elif RNG.random() < 0.5:
        spoil_field(body)


def spoil_field(target):
    fields = [
        field
        for field, value in target.items()
        if field != "vendorId" and isinstance(value, (str, float, int)) and not isinstance(value, bool)
    ]
    if not fields:
        return
    field = RNG.choice(fields)
    if isinstance(target[field], str):
        pool = HOSTILE_TIME if field.endswith("At") else HOSTILE_TEXT
    else:
        pool = HOSTILE_NUMBER
    target[field] = RNG.choice(pool)
