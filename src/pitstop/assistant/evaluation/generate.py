"""Questions nobody wrote: built from the live API's own answers, by seed.

Machines and open work orders are drawn from the fleet as the API lists it, and each is asked in
one of several phrasings; the expected facts are the API's (its predicted RUL, its work order's
machine and state). They measure the assistant on ids, numbers and wordings the set's authors
never saw, the way a reviewer would probe it.
"""

from __future__ import annotations

import random

from pitstop.assistant.evaluation.cases import Case, Expect
from pitstop.assistant.evaluation.snapshot import Call, Snapshot

MACHINE_PHRASINGS = (
    "what's the RUL of {id}?",
    "how long has {id} got left?",
    "{id} remaining life?",
    "how is {id} doing",
    "status of {id} please",
    "Is {id} OK?",
    "how much life is left in {id}",
    "tell me about {id}",
    "any problems with {id}?",
    "when does {id} need servicing?",
    "how many {unit} does {id} have left?",
)
ORDER_PHRASINGS = (
    "what's going on with WO-{n}?",
    "details on work order {n}",
    "WO-{n} status?",
    "which machine is WO-{n} for?",
)
GENERATED = "generated"


def generated_cases(call: Call, fleet: str, machines: int = 12, orders: int = 6, seed: int = 0) -> list[Case]:
    """``machines`` status questions and ``orders`` work-order questions about what the API
    lists now, drawn and phrased by ``seed``."""
    snap = Snapshot.read(call)
    rng = random.Random(seed)
    scored = sorted(
        m["machine_id"]
        for m in snap.machines.values()
        if m["lifecycle"] == "active" and m["predicted_rul"] is not None
    )
    open_orders = sorted(
        o["id"] for o in snap.orders.values() if o["status"] in ("open", "acknowledged", "in_progress")
    )
    cases = []
    for i, machine_id in enumerate(rng.sample(scored, min(machines, len(scored)))):
        unit = str(snap.machines[machine_id]["time_unit"])
        ask = rng.choice(MACHINE_PHRASINGS).format(id=machine_id, unit=unit)
        turn = Expect(ask=ask, machine=machine_id, facts=["machine_id", "predicted_rul"], cites=["machine"])
        cases.append(
            Case(f"gen-{fleet}-machine-{i + 1}", fleet, GENERATED, "technician", [turn], "generated")
        )
    for i, order_id in enumerate(rng.sample(open_orders, min(orders, len(open_orders)))):
        ask = rng.choice(ORDER_PHRASINGS).format(n=order_id)
        turn = Expect(
            ask=ask,
            order=str(order_id),
            facts=["order_id", "order_machine", "order_status"],
            cites=[f"work_order:{order_id}"],
        )
        cases.append(Case(f"gen-{fleet}-order-{i + 1}", fleet, GENERATED, "technician", [turn], "generated"))
    return cases
